"""Sample data: one BBBC007 nuclei image with its mask and a sparse, painted-looking annotation.

Only numpy, scipy and tifffile are used here, so opening the sample does not import torch.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SAMPLE_IMAGE = "17P1_POS0011_D_1UL.tif"
ATTRIBUTION = ("BBBC007v1 (Jones et al. 2005), Broad Bioimage Benchmark Collection "
               "(Ljosa et al., Nature Methods 2012)")


def sample_folder() -> Path:
    """The BBBC007 sample shipped inside the ``btunet`` package.

    Found via the import system without importing ``btunet`` itself (which imports torch);
    this is ``importlib.resources.files("btunet") / "data" / "bbbc007"``.
    """
    spec = importlib.util.find_spec("btunet")
    if spec is None:
        raise ModuleNotFoundError("the btunet package is not installed")
    for location in spec.submodule_search_locations or ():
        folder = Path(location) / "data" / "bbbc007"
        if folder.is_dir():
            return folder
    from importlib import resources  # a zipped or unusual install: let the package tell us
    return Path(str(resources.files("btunet") / "data" / "bbbc007"))


def load_sample(name: str = SAMPLE_IMAGE) -> tuple[np.ndarray, np.ndarray]:
    """(image, instance mask) of one sample image."""
    import tifffile
    folder = sample_folder()
    return tifffile.imread(folder / "images" / name), tifffile.imread(folder / "masks" / name)


def sparse_annotation(mask: np.ndarray, n_objects: int = 20, n_background: int = 20,
                      radius: int = 5, n_rings: int = 8, seed: int = 0) -> np.ndarray:
    """A few painted strokes made reproducibly from an instance mask (sparse convention).

    Label 2 (object): a disk at the innermost point of ``n_objects`` random objects, kept inside
    the object. Label 1 (background): a thin ring traced just outside ``n_rings`` of those
    objects (what a user paints to show where an object ends) and ``n_background`` disks well
    away from every object. Everything else is 0 (not annotated).
    """
    from scipy import ndimage as ndi
    mask = np.asarray(mask)
    rng = np.random.default_rng(seed)
    out = np.zeros(mask.shape, np.uint8)
    yy, xx = np.ogrid[:mask.shape[0], :mask.shape[1]]
    away = ndi.distance_transform_edt(mask == 0)  # distance to the nearest object
    ids = np.unique(mask[mask > 0])
    for k, obj_id in enumerate(rng.choice(ids, min(n_objects, len(ids)), replace=False)):
        obj = mask == obj_id
        inner = ndi.distance_transform_edt(obj)
        cy, cx = np.unravel_index(int(np.argmax(inner)), inner.shape)
        out[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2) & obj] = 2
        if k < n_rings:
            outside = ndi.distance_transform_edt(~obj)
            out[(outside > 2) & (outside <= 4) & (away > 1)] = 1
    candidates = np.argwhere(away > radius + 3)
    if len(candidates):
        for cy, cx in candidates[rng.choice(len(candidates), min(n_background, len(candidates)),
                                            replace=False)]:
            out[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2) & (away > 2)] = 1
    return out


def bbbc007_sample():
    """napari sample-data contribution: image, sparse annotation and (hidden) full mask."""
    image, mask = load_sample()
    meta = {"source": f"{SAMPLE_IMAGE} from {ATTRIBUTION}"}
    return [
        (image, {"name": "BBBC007 nuclei", "metadata": meta}, "image"),
        (mask.astype(np.int32), {"name": "BBBC007 mask", "visible": False, "opacity": 0.5,
                                 "metadata": meta}, "labels"),
        (sparse_annotation(mask), {"name": "BBBC007 annotation", "metadata": meta}, "labels"),
    ]
