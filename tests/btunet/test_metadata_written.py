"""Training writes its metadata from the typed ``CheckpointMetadata``: what a fresh model or encoder
carries reads back as the same fields, and a file saved from it holds the same keys and values."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import tifffile

import btunet
from btunet.base.errors import BTUnetError
from btunet.core.checkpoint import model_metadata, read_metadata, save_model
from btunet.core.metadata import CheckpointMetadata, ModelSpec, Normalization

HEADER = ("format", "format_version", "kind", "model", "channels", "date", "versions")


@pytest.fixture(scope="module")
def crops(sample):
    images = [tifffile.imread(p)[100:228, 100:228] for p in sample[0][:2]]
    masks = [tifffile.imread(p)[100:228, 100:228] for p in sample[1][:2]]
    return images, masks


@pytest.fixture(scope="module")
def trained(crops, fast_finetune_config):
    return btunet.finetune(*crops, replace(fast_finetune_config, instances="auto"))


def test_a_trained_model_carries_its_typed_metadata_as_a_reader_sees_it(trained):
    typed = model_metadata(trained)
    assert typed.object_dict() == trained.metadata
    assert typed.instances == "boundary" and typed.mask_mode == "dense"
    assert typed.threshold == trained.metadata["threshold"] and typed.min_size == trained.metadata["min_size"]
    assert typed.provenance["trained_on"] == trained.metadata["trained_on"]


def test_the_saved_file_holds_what_the_model_carries(trained, tmp_path):
    path = save_model(trained, tmp_path / "m.safetensors")
    on_disk = {k: v for k, v in read_metadata(path).items() if k not in HEADER}
    assert on_disk == trained.metadata
    assert {"date", "versions", "format", "kind", "model"} <= set(read_metadata(path))


def test_a_continuation_reads_the_model_it_continues_through_its_typed_metadata(trained, crops,
                                                                                fast_finetune_config):
    model = copy.deepcopy(trained)
    model.metadata = {**model.metadata, "threshold": 0.4, "min_size": 7}
    cfg = replace(fast_finetune_config.continuation(), epochs=1)
    again = btunet.finetune(*crops, cfg, model=model)
    assert again.metadata["threshold"] == 0.4  # a continuation keeps the model's own
    assert again.metadata["normalization"] == trained.metadata["normalization"]
    assert again.metadata["continued_from"]["trained_on"] == trained.metadata["trained_on"]


def test_an_encoder_carries_its_typed_metadata(crops, fast_pretrain_config):
    encoder = btunet.pretrain(crops[0], fast_pretrain_config)
    typed = CheckpointMetadata.from_dict({**encoder.metadata, "format": "btunet", "format_version": 1,
                                          "kind": "encoder", "model": encoder.model_config,
                                          "channels": encoder.channels})
    assert typed.object_dict() == encoder.metadata
    assert list(encoder.metadata)[:3] == ["normalization", "trained_on", "epochs"]
    assert encoder.metadata["normalization"] == Normalization().as_dict()


def test_metadata_is_checked_where_it_is_made():
    spec = ModelSpec("unet", 1)
    with pytest.raises(BTUnetError, match="threshold"):
        CheckpointMetadata("model", spec, threshold=1.5).checked()
    assert CheckpointMetadata("model", spec, threshold=0.25).checked().threshold == 0.25
