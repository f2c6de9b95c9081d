import json
import os

import pytest
import torch
from safetensors.torch import save_file

from btunet import CheckpointError, create_model, load_model, read_metadata, save_model
from btunet.core.checkpoint import save_checkpoint
from btunet.train.pretrain import PretrainedEncoder


@pytest.mark.parametrize("name", ["unet", "attention_unet"])
def test_model_round_trip_keeps_weights_and_metadata(tmp_path, name):
    model = create_model(name, in_channels=3).eval()
    model.metadata = {"trained_on": {"images": ["a.tif"]}}
    path = save_model(model, tmp_path / "m.safetensors", epochs=3)
    loaded = load_model(path)
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    meta = read_metadata(path)
    assert meta["kind"] == "model" and meta["channels"] == 3 and meta["epochs"] == 3
    assert meta["trained_on"]["images"] == ["a.tif"]
    assert meta["versions"]["torch"] == torch.__version__
    x = torch.rand(1, 3, 40, 40)
    assert torch.allclose(model(x), loaded(x))


def test_refuses_a_pickle_file(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save(create_model("unet").state_dict(), path)  # a pickle with the right name
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(path)


def test_refuses_garbage_and_truncated_files(tmp_path):
    good = save_model(create_model("unet"), tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError):
            load_model(path)


def test_refuses_foreign_safetensors(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a btunet checkpoint"):
        load_model(path)


def test_refuses_weights_that_do_not_fit_the_variant(tmp_path):
    tensors = create_model("unet").state_dict()
    path = save_checkpoint(tmp_path / "m.safetensors", tensors,
                           {"kind": "model", "model": create_model("attention_unet").config, "channels": 1})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


def test_encoder_and_model_kinds_are_not_confused(tmp_path):
    model = create_model("unet")
    enc = PretrainedEncoder(model.config, model.encoder.state_dict(), {}, {})
    enc_path = enc.save(tmp_path / "enc.safetensors")
    model_path = save_model(model, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="fine-tune it first"):
        load_model(enc_path)
    with pytest.raises(CheckpointError, match="not an encoder checkpoint"):
        PretrainedEncoder.load(model_path)


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = save_model(create_model("unet"), tmp_path / "m.safetensors")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        save_model(create_model("unet", in_channels=3), path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_metadata_is_plain_json(tmp_path):
    path = save_model(create_model("unet"), tmp_path / "m.safetensors")
    meta = read_metadata(path)
    assert json.loads(json.dumps(meta)) == meta
    assert meta["format"] == "btunet" and meta["format_version"] == 1
