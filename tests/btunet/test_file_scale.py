"""The Z spacing of a stack from the file's own scale (ImageJ, OME-TIFF), and `btunet predict` using it."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from btunet.io.axes import file_z_spacing


def stack() -> np.ndarray:
    return np.zeros((4, 16, 16), np.uint8)


def test_imagej_spacing_over_pixel_width(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, stack(), imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"spacing": 1.0, "unit": "um", "axes": "ZYX"})
    assert file_z_spacing(path) == pytest.approx(5.0)


def test_ome_physical_sizes(tmp_path):
    path = tmp_path / "ome.tif"
    tifffile.imwrite(path, stack(), ome=True, metadata={"axes": "ZYX", "PhysicalSizeZ": 0.29,
                                                        "PhysicalSizeX": 0.26, "PhysicalSizeY": 0.26})
    assert file_z_spacing(path) == pytest.approx(0.29 / 0.26)


def test_files_that_do_not_say(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", stack(), photometric="minisblack")
    tifffile.imwrite(tmp_path / "ij.tif", stack(), imagej=True, metadata={"axes": "ZYX"})
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    for name in ("plain.tif", "ij.tif", "broken.tif", "missing.tif"):
        assert file_z_spacing(tmp_path / name) is None, name


def test_predict_cli_takes_the_files_spacing_unless_given(tmp_path, monkeypatch):
    import sys

    from btunet.cli.commands import main
    from btunet.core.checkpoint import save_model
    from btunet.models import create_model
    save_model(create_model("unet").eval(), tmp_path / "m.safetensors")
    tifffile.imwrite(tmp_path / "s.tif", stack(), imagej=True, resolution=(5.0, 5.0),
                     metadata={"spacing": 1.0, "axes": "ZYX"})
    predict_module = sys.modules["btunet.infer.predict"]
    seen = []
    real = predict_module.predict_to_tiff
    monkeypatch.setattr(predict_module, "predict_to_tiff",
                        lambda *args, **kw: seen.append(kw["z_spacing"]) or real(*args, **kw))
    common = ["predict", str(tmp_path / "m.safetensors"), str(tmp_path / "s.tif"), "--instances", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "a")]) == 0
    assert main(common + ["--out", str(tmp_path / "b"), "--z-spacing", "2"]) == 0
    assert seen == [pytest.approx(5.0), 2.0]
