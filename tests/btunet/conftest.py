"""Shared fixtures: the real BBBC007 sample shipped in the package, and small files made from it."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from btunet.io.sample import sample_paths


@pytest.fixture(scope="session")
def sample():
    """(image paths, mask paths) of the 14 shipped BBBC007 images."""
    return sample_paths()


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory, sample):
    """Four real 128x128 crops (images + instance masks) written as TIFFs, for fast runs."""
    root = tmp_path_factory.mktemp("small")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for image_path, mask_path in zip(*[p[:4] for p in sample], strict=True):
        image, mask = tifffile.imread(image_path), tifffile.imread(mask_path)
        tifffile.imwrite(root / "images" / image_path.name, image[100:228, 100:228])
        tifffile.imwrite(root / "masks" / image_path.name, mask[100:228, 100:228])
    return root


@pytest.fixture(scope="session")
def fast_finetune_config():
    from btunet import FinetuneConfig
    return FinetuneConfig(mask_mode="dense", epochs=2, steps_per_epoch=3, batch_size=4, patch_size=64,
                          device="cpu")


@pytest.fixture(scope="session")
def fast_pretrain_config():
    from btunet import PretrainConfig
    return PretrainConfig(epochs=1, batch_size=4, patch_size=64, samples_per_epoch=8, device="cpu",
                          projector_dim=32)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
