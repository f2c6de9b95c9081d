"""Export to bioimage.io / ONNX / TorchScript and back, for every variant with 1 and 3 channels.

Packages are validated by bioimageio.spec and run by bioimageio.core's own model test, with
network connections refused, so both work offline.
"""
import re
import socket
import sys
import zipfile

import numpy as np
import pytest
import tifffile
import torch

from btunet import MODELS, BTUnetError, create_model, load_model, predict, read_metadata, save_model
from btunet.cli.commands import main
from btunet.exporting.bioimageio_package import CHECKPOINT, sample_tensor, scale_range
from btunet.exporting.export import export, inference_network, receptive_radius, tiling

CASES = [(name, channels) for name in MODELS for channels in (1, 3)]
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def offline():
    """Refuse every internet connection while these tests run."""
    connect = socket.socket.connect

    def refuse(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"network access during an offline test: {address}")
        return connect(self, address)

    socket.socket.connect = refuse
    yield
    socket.socket.connect = connect


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Oversubscribed cores slow torch down many times; these tests check results, not speed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def image(sample):
    return tifffile.imread(sample[0][0])


def settled(name: str, channels: int, image: np.ndarray):
    """A small model whose BatchNorm statistics come from real pixels (so folding them matters)."""
    torch.manual_seed(0)
    model = create_model(name, in_channels=channels, base_filters=4)
    pixels = scale_range(sample_tensor(channels, 128))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.from_numpy(pixels))
    return model.eval()


@pytest.fixture(scope="module")
def trained(small_sample, fast_finetune_config, tmp_path_factory):
    """A fine-tuned unet checkpoint (real training metadata) and its folder."""
    from btunet import finetune
    net = finetune(str(small_sample / "images"), str(small_sample / "masks"), fast_finetune_config)
    folder = tmp_path_factory.mktemp("export_cli")
    return save_model(net, folder / "model.safetensors")


@pytest.fixture(scope="module")
def packages(image, tmp_path_factory):
    """(model, package path) for every case, exported once."""
    folder = tmp_path_factory.mktemp("packages")
    out = {}
    for name, channels in CASES:
        model = settled(name, channels, image)
        suffix = ".zip" if channels == 1 else ""  # a zip file and a folder package
        out[name, channels] = model, export(model, folder / f"{name}_{channels}{suffix}")
    return out


def _file(package, name: str, tmp_path):
    if package.is_dir():
        return package / name
    with zipfile.ZipFile(package) as archive:
        archive.extract(name, tmp_path)
    return tmp_path / name


@pytest.mark.parametrize("name,channels", CASES)
def test_package_validates_runs_and_matches_pytorch(packages, name, channels, tmp_path):
    import onnxruntime
    from bioimageio.core import test_model
    from bioimageio.spec import load_model_description
    from bioimageio.spec.model.v0_5 import ModelDescr
    model, package = packages[name, channels]
    descr = load_model_description(package, perform_io_checks=True)
    assert isinstance(descr, ModelDescr) and descr.format_version.startswith("0.5")
    (raw,), (probability,) = descr.inputs, descr.outputs
    assert [str(a.id) for a in raw.axes] == ["batch", "channel", "y", "x"]
    assert len(raw.axes[1].channel_names) == channels
    (kwargs,) = [p.kwargs for p in raw.preprocessing if p.id == "scale_range"]
    assert (kwargs.min_percentile, kwargs.max_percentile) == (1.0, 99.8)
    assert [str(a) for a in kwargs.axes] == ["channel", "y", "x"]
    tile = tiling(model)
    assert raw.axes[2].size.step == 16 and raw.axes[2].size.min == tile.min_size
    assert probability.axes[2].halo == probability.axes[3].halo == tile.halo
    assert descr.config.btunet["model"] == model.config
    assert {str(a.source.path) for a in descr.attachments} == {CHECKPOINT}
    # bioimageio.core's own test: each variant's two channel counts cover both weight formats
    summary = test_model(package, weight_format="onnx" if channels == 1 else "torchscript")
    assert summary.status == "passed", summary.format()

    raw_test = np.load(_file(package, "test_input.npy", tmp_path))
    assert raw_test.shape[:2] == (1, channels)
    with torch.no_grad():  # the unchanged model, BatchNorm not folded
        expected = torch.sigmoid(model(torch.from_numpy(scale_range(raw_test)))).numpy()
    assert np.abs(np.load(_file(package, "test_output.npy", tmp_path)) - expected).max() < 1e-4
    session = onnxruntime.InferenceSession(str(_file(package, "weights.onnx", tmp_path)),
                                           providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"raw": scale_range(raw_test)})[0]
    assert np.abs(onnx_out - expected).max() < 1e-4
    traced = torch.jit.load(str(_file(package, "weights_torchscript.pt", tmp_path)))
    with torch.no_grad():
        assert np.abs(traced(torch.from_numpy(scale_range(raw_test))).numpy() - expected).max() < 1e-4


@pytest.mark.parametrize("name,channels", CASES)
def test_round_trip_predicts_the_same_labels(packages, image, name, channels):
    model, package = packages[name, channels]
    restored = load_model(package)
    assert restored.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)
    pixels = image if channels == 1 else np.stack([image, image // 2, image], axis=-1)
    original = predict(model, pixels, device="cpu")
    # an untrained model is unsure everywhere: its median probability splits the image
    threshold = float(np.median(original.probabilities))
    expected = (original.probabilities > threshold).astype(np.uint8)
    assert 0 < expected.mean() < 1  # both classes present
    again = predict(package, pixels, device="cpu", threshold=threshold)
    assert np.array_equal(again.labels, expected)
    assert np.array_equal(again.probabilities, original.probabilities)


def test_bioimageio_core_tiles_reproduce_btunet_away_from_the_border(packages, image):
    """bioimageio.core's block-wise prediction (tiles with the package's halo, its own
    scale_range) gives btunet's probabilities wherever the halo reaches no image border."""
    import bioimageio.core
    model, package = packages["unet", 1]
    assert image.shape == (400, 400)  # 208 + 12 * 16: a valid size for the package
    result = bioimageio.core.predict(model=package, inputs=image[None, None].astype(np.float32),
                                     blocksize_parameter=2)
    theirs = np.asarray(result.members["probability"].data)[0, 0]
    ours = predict(model, image, device="cpu", fast=False).probabilities
    inner = (slice(tiling(model).halo, -tiling(model).halo),) * 2
    assert np.abs(theirs - ours)[inner].max() < 1e-5


@pytest.mark.parametrize("name", ["unet", "attention_unet"])
def test_the_halo_is_the_smallest_that_gives_exact_tiles(image, name):
    """In float64 (no rounding noise) a pixel within the last tile step of the measured radius
    still changes the output, none further out does, and tiles overlapping by the halo equal the
    whole image. (Exactly at the radius the path is a single chain of ReLUs and max pools, which a
    random network may switch off: whether it does depends on the CPU's rounding of the BatchNorm
    statistics, so the bound itself is tested on the linearised network, below.)"""
    model = settled(name, 1, image)
    tile = tiling(model)
    net = inference_network(model).double()
    x = torch.from_numpy(scale_range(sample_tensor(1, 384))).double()
    c, n = 192, tile.step
    with torch.no_grad():
        whole = net(x)

        def change(column: int) -> float:
            bumped = x.clone()
            bumped[..., :, column] += 50
            return float((net(bumped) - whole)[..., c:c + n, c:c + n].abs().max())

        inside = range(tile.radius - n + 1, tile.radius + 1)
        assert any(change(c - r) > 0 for r in inside) and any(change(c + n - 1 + r) > 0 for r in inside)
        assert change(c - tile.radius - 1) == 0 and change(c + n + tile.radius) == 0

        def tiled(halo: int, block: int = 128) -> torch.Tensor:
            out = torch.empty_like(whole)
            for y in range(0, 384, block):
                for x0 in range(0, 384, block):
                    ys, xs = max(0, y - halo), max(0, x0 - halo)
                    part = net(x[..., ys:y + block + halo, xs:x0 + block + halo])
                    out[..., y:y + block, x0:x0 + block] = part[..., y - ys:y - ys + block, x0 - xs:x0 - xs + block]
            return out

        assert (tiled(tile.halo) - whole).abs().max() < 1e-15  # rounding only
        assert (tiled(tile.halo - n) - whole).abs().max() > 1e-14  # far-off pixels were missing


def test_receptive_fields_of_the_variants():
    assert {name: receptive_radius(name) for name in MODELS} == {
        "unet": 94, "attention_unet": 110, "inception_unet": 94, "rca_iunet": 173}
    assert tiling(create_model("rca_iunet", base_filters=2)).global_field  # spectral pooling
    assert not tiling(create_model("attention_unet", base_filters=2)).global_field


def test_package_documents_the_training(trained, tmp_path):
    package = export(trained, tmp_path / "model.zip", authors=["A. Painter"])
    with zipfile.ZipFile(package) as archive:
        doc = archive.read("README.md").decode()
        yaml = archive.read("rdf.yaml").decode()
        assert archive.read("cover.png")[:4] == b"\x89PNG"
    meta = read_metadata(trained)
    assert all(name in doc for name in meta["trained_on"]["images"])
    assert "unet" in doc and "1 (grayscale)" in doc and "scale_range" in doc
    assert "arXiv:2112.03916" in doc
    assert "10.48550/arXiv.2112.03916" in yaml and "10.1038/nmeth.2083" in yaml  # BT-Unet, BBBC007
    assert "A. Painter" in yaml
    assert read_metadata(package) == meta


def test_package_carries_the_models_own_threshold(trained, tmp_path):
    tuned = save_model(load_model(trained), tmp_path / "tuned.safetensors", threshold=0.65)
    package = export(tuned, tmp_path / "tuned.zip")
    with zipfile.ZipFile(package) as archive:
        doc, yaml = archive.read("README.md").decode(), archive.read("rdf.yaml").decode()
    assert "threshold it at 0.65" in doc and "threshold at 0.65 for the mask" in yaml
    assert "threshold: 0.65" in yaml and read_metadata(package)["threshold"] == 0.65


def test_onnx_and_torchscript_files(trained, tmp_path):
    import onnxruntime
    model = load_model(trained)
    x = scale_range(sample_tensor(1, 96))
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(x))).numpy()
    folder = tmp_path / "out"
    folder.mkdir()
    onnx_file = export(trained, folder, "onnx")
    assert onnx_file == folder / "unet.onnx"
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"raw": x})[0] - expected).max() < 1e-4
    script = export(trained, tmp_path / "model.pt", "torchscript")
    assert np.abs(torch.jit.load(str(script))(torch.from_numpy(x)).detach().numpy() - expected).max() < 1e-4


def test_foreign_packages_are_refused(image, tmp_path):
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\nname: someone else's model\n")
    with pytest.raises(BTUnetError, match="not one exported by btunet.*bioimageio.core"):
        predict(foreign, image, device="cpu")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "bioimageio.yaml").write_text("type: model\n")
    with pytest.raises(BTUnetError, match="not one exported by btunet"):
        load_model(folder)
    not_a_package = tmp_path / "photos.zip"
    with zipfile.ZipFile(not_a_package, "w") as archive:
        archive.writestr("a.txt", "hello")
    with pytest.raises(BTUnetError, match="not a bioimage.io package"):
        load_model(not_a_package)


def test_cli_export_refuses_existing_output_and_packages_predict_and_continue(
        trained, small_sample, tmp_path, capsys):
    out = tmp_path / "model.zip"
    args = ["export", str(trained), "--out", str(out)]
    assert main(args) == 0
    first = out.read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert out.read_bytes() == first
    assert main(args + ["--overwrite"]) == 0
    assert main(["export", str(trained), "--out", str(trained)]) == 2
    assert "is the model itself" in capsys.readouterr().err
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cell.tif").write_bytes(b"not mine")
    assert main(["export", str(trained), "--out", str(photos), "--overwrite"]) == 2
    assert "folder of other files" in capsys.readouterr().err and (photos / "cell.tif").exists()
    assert main(["export", str(trained), "--out", str(tmp_path / "package")]) == 0  # a folder package
    assert main(["export", str(trained), "--out", str(tmp_path / "package")]) == 2
    assert main(["export", str(trained), "--out", str(tmp_path / "package"), "--overwrite"]) == 0
    assert read_metadata(tmp_path / "package") == read_metadata(trained)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    pred = tmp_path / "pred"
    assert main(["predict", str(out), str(small_sample / "images"), "--out", str(pred), "--device", "cpu"]) == 0
    direct = tmp_path / "direct"
    assert main(["predict", str(trained), str(small_sample / "images"), "--out", str(direct), "--device", "cpu"]) == 0
    for p in pred.iterdir():
        assert np.array_equal(tifffile.imread(p), tifffile.imread(direct / p.name))
    continued = tmp_path / "continued.safetensors"
    assert main(["finetune", "--images", str(small_sample / "images"), "--masks", str(small_sample / "masks"),
                 "--init", str(out), "--out", str(continued), "--epochs", "1", "--steps-per-epoch", "1",
                 "--batch-size", "2", "--patch-size", "64", "--device", "cpu"]) == 0
    meta = read_metadata(continued)
    assert meta["continued_from"]["trained_on"] == read_metadata(trained)["trained_on"]


def test_missing_packages_are_named_in_one_line(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # makes `import bioimageio.spec` fail
    with pytest.raises(BTUnetError, match=r"needs bioimageio.spec.*pip install 'napari-btunet\[export\]'"):
        export(trained, tmp_path / "m.zip")
    assert main(["export", str(trained), "--out", str(tmp_path / "m.zip")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "napari-btunet[export]" in err
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", str(trained), "--out", str(tmp_path / "m.onnx"), "--format", "onnx"]) == 2
    assert "needs onnx" in capsys.readouterr().err
    assert main(["export", str(trained), "--out", str(tmp_path / "m.pt"), "--format", "torchscript"]) == 0
    assert not (tmp_path / "m.zip").exists() and not (tmp_path / "m.onnx").exists()


def test_a_failed_export_leaves_nothing_behind(trained, tmp_path, monkeypatch):
    from btunet.exporting import bioimageio_package

    def broken(path):
        raise RuntimeError("the bioimage.io package does not validate: test")

    monkeypatch.setattr(bioimageio_package, "_validate", broken)
    with pytest.raises(RuntimeError, match="does not validate"):
        export(trained, tmp_path / "m.zip")
    assert list(tmp_path.iterdir()) == []


def _headed(classes: list[str] | None, boundary: bool):
    """A small model with named classes and / or a boundary channel, as fine-tuning makes them."""
    from btunet.labels.heads import HeadSpec, default_classes
    head = HeadSpec(len(classes) if classes else 1, boundary)
    torch.manual_seed(0)
    model = create_model("unet", out_channels=head.channels, base_filters=4).eval()
    model.metadata = {"classes": [c.as_dict() for c in default_classes(head.n_classes, classes)] if classes else None,
                      "instances": "boundary" if boundary else None}
    return model


@pytest.mark.parametrize("classes, boundary, channels", [
    (["nucleus", "debris"], False, "3 (background, nucleus, debris)"),
    (None, True, "2 (object, boundary)"),
    (["nucleus", "debris"], True, "4 (background, nucleus, debris, boundary)"),
])
def test_class_and_boundary_models_export_as_networks_not_packages(classes, boundary, channels, tmp_path, capsys):
    import onnxruntime

    from btunet.labels.heads import head_of, split_logits
    model = _headed(classes, boundary)
    with pytest.raises(BTUnetError, match=rf"holds one output channel .*this model has {re.escape(channels)}; "
                                          "export it as onnx or torchscript"):
        export(model, tmp_path / "m.zip")
    assert list(tmp_path.iterdir()) == []  # refused before any work
    path = save_model(model, tmp_path / "m.safetensors")
    assert main(["export", str(path), "--out", str(tmp_path / "m.zip")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds one output channel" in err and not (tmp_path / "m.zip").exists()

    x = scale_range(sample_tensor(1, 96))
    with torch.no_grad():
        parts = split_logits(model(torch.from_numpy(x))[0].numpy(), head_of(model))
    expected = np.concatenate([parts["classes"] if parts["classes"] is not None else parts["object"][None]]
                              + ([parts["boundary"][None]] if boundary else []))
    session = onnxruntime.InferenceSession(str(export(model, tmp_path / "m.onnx", "onnx")),
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {"raw": x})[0][0]
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
    if classes:  # one softmax over background and the classes
        assert np.allclose(got[:len(classes) + 1].sum(axis=0), 1, atol=1e-5)
    script = torch.jit.load(str(export(model, tmp_path / "m.pt", "torchscript")))
    assert np.abs(script(torch.from_numpy(x))[0].detach().numpy() - expected).max() < 1e-4


@pytest.mark.parametrize("licence", ["", "not-a-licence", "mit", None])
def test_a_bad_licence_is_refused_before_any_work(licence, tmp_path, capsys):
    with pytest.raises(BTUnetError, match=r"license .* is not an SPDX licence identifier.*CC-BY-4.0"):
        export(tmp_path / "no-model-read-yet.safetensors", tmp_path / "m.zip", license=licence)
    if licence is not None:
        assert main(["export", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "m.zip"),
                     "--license", licence]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "SPDX" in err
    assert list(tmp_path.iterdir()) == []
    model = create_model("unet", base_filters=4).eval()  # the formats without a licence ignore it
    assert export(model, tmp_path / "m.pt", "torchscript", license=licence).exists()
