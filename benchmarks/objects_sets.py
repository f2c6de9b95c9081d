"""The image sets of ``objects.py``: the tuning sets as planes, the crowded held-out sets, and
two 3-D sets whose test images are whole volumes labelled in 3-D.

Crowded held-out sets (bright field, phase contrast; `quality.FILE_SETS`): the first file is
densely annotated, the other files are the test set. They are reported, never used to tune.

3-D sets: the model is fine-tuned on planes and predicts each test volume as a Z stack, one id
per object through its planes (``predict(..., z_spacing=...)``); a time axis is never linked:
each CHO frame is its own (Z, Y, X) volume.
"""
from __future__ import annotations

from pathlib import Path

from quality import FILE_SETS, load_dataset

#: Z step / pixel width of the 3-D sets. cells3d (scikit-image): 0.29 um planes, 0.26 um pixels;
#: Fluo-N3DH-CHO (Cell Tracking Challenge): 1.0 um planes, 0.202 um pixels.
Z_SPACING = {"cells3d_volume": 0.29 / 0.26, "cho_3dt_volumes": 1.0 / 0.202}
VOLUMES = tuple(Z_SPACING)
CROWDED = tuple(FILE_SETS)
ALL = ("bbbc007", "cells3d", "cho_3dt", *CROWDED, *VOLUMES)


def load(name: str, data: Path) -> dict:
    """{"train": [(name, image, mask)], "test": [...], "predict": extra ``predict`` arguments}."""
    if name in VOLUMES:
        return load_volumes(name, data)
    ds = load_dataset(name, data)
    if name == "bbbc007":  # 2 training, 12 test images
        ds["train"], ds["test"] = ds["train"][:2], ds["train"][2:] + ds["test"]
    ds["train"] = ds["train"][:2]  # cells3d, cho_3dt: the first 2 planes of the training pool
    return {**ds, "predict": {}}


def load_volumes(name: str, data: Path) -> dict:
    """cells3d: trained on planes z = 34 and 42 (as the `cells3d` plane set), tested on the whole
    volume. CHO: trained on planes 0-2 of frames 0 and 1, tested on every second later frame,
    each frame a (Z, Y, X) volume."""
    import tifffile
    if name == "cells3d_volume":
        vol = tifffile.imread(data / "cells3d" / "nuclei.tif")
        lab = tifffile.imread(data / "cells3d" / "nuclei_labels.tif")
        train = [(f"z{z}", vol[z], lab[z]) for z in (34, 42)]
        test = [("volume", vol, lab)]
    else:
        stack = tifffile.imread(data / "cho_3dt" / "stack.tif")
        masks = tifffile.imread(data / "cho_3dt" / "masks.tif")
        # planes 3-4 of the reference masks hold fragments of 1-200 px, not nuclei: not for training
        train = [(f"t{t}z{z}", stack[t, z], masks[t, z]) for t in (0, 1) for z in range(3)]
        test = [(f"t{t}", stack[t], masks[t]) for t in range(4, len(stack), 2)]
    return {"train": train, "test": test, "predict": {"z_spacing": Z_SPACING[name]}}

