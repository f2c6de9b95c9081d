"""Starting a fine-tune from a pre-trained encoder (encoder_start.py) and the built-in encoder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

import btunet
from btunet.cli.commands import main
from btunet.core.checkpoint import load_checkpoint
from btunet.models import create_model
from btunet.train.builtin_encoder import BUILTIN_PATH, builtin_metadata, describe_builtin
from btunet.train.encoder_start import conv_chains, encoder_lr_factor, refit_batchnorm, rescale_to_norms, weight_norms
from btunet.train.pretrain import PretrainedEncoder, as_encoder


def batches(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(4, 1, 64, 64, generator=g) * 3 + 1 for _ in range(n)]


def test_refit_batchnorm_replaces_pretraining_statistics_with_those_of_the_images():
    net = create_model("unet")
    first = net.encoder.blocks[0].body[0][1]  # the first BatchNorm: after the first separable conv
    first.running_mean.fill_(5.0)  # statistics of other images, as pre-training leaves them
    first.running_var.fill_(0.01)
    seen: list[torch.Tensor] = []
    hook = first.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    rng_before = torch.get_rng_state()
    net.eval()
    assert refit_batchnorm(net, batches()) == 3
    hook.remove()
    # the naive computation: each batch's per-channel mean and (unbiased) variance, averaged
    mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen]).mean(0)
    var = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in seen]).mean(0)
    assert torch.allclose(first.running_mean, mean, atol=1e-5)
    assert torch.allclose(first.running_var, var, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(first.running_mean, torch.full_like(mean, 5.0))
    assert first.momentum == 0.1 and not net.training  # momentum and mode restored
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())  # weights untouched
    assert torch.equal(torch.get_rng_state(), rng_before)  # dropout draws did not move the torch RNG


@pytest.mark.parametrize("variant", ["unet", "attention_unet", "inception_unet", "rca_iunet"])
def test_rescale_brings_grown_weights_back_without_changing_the_training_mode_output(variant):
    torch.manual_seed(0)
    net = create_model(variant)
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.eps = 1e-12  # the one place the scale shows (as eps / variance): out of the way of the check
    fresh = weight_norms(net.encoder)
    chains = conv_chains(net.encoder)
    assert chains and all(isinstance(c, nn.Conv2d) for chain in chains for c in chain)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a long pre-training grows some layers (up to 1.6x), shrinks none here
        for chain in chains:
            for conv in chain:
                factor = 1 + torch.rand(1, generator=g).item()
                conv.weight.mul_(factor)
                for later in chain[chain.index(conv):]:
                    if later.bias is not None:
                        later.bias.mul_(factor)
    x = batches(1)[0]
    net.train()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)  # the same dropout draws in both passes
        before = net.encoder(x)[-1].clone()
    rescaled = rescale_to_norms(net.encoder, fresh)
    assert rescaled == sum(len(chain) for chain in chains)
    for chain in chains:
        for conv in chain:
            assert float(conv.weight.norm()) == pytest.approx(fresh[id(conv.weight)], rel=1e-5)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        after = net.encoder(x)[-1]
    assert torch.allclose(after, before, atol=1e-4, rtol=1e-4)  # BatchNorm divides the scale out


def test_finetune_rescales_a_pretrained_encoder_only_when_asked(fast_finetune_config):
    import dataclasses

    from btunet.train.model_start import build_from_encoder
    shipped = as_encoder("builtin")
    deep = "blocks.4.body.1.0.1.weight"
    grown = {k: v * 1.6 if k == deep else v for k, v in shipped.encoder_state.items()}  # as a long run grows it
    enc = dataclasses.replace(shipped, encoder_state=grown)
    saved = float(grown[deep].float().norm())
    for rescale in (False, True):
        cfg = btunet.FinetuneConfig(**{**fast_finetune_config.__dict__, "encoder_rescale": rescale})
        net = build_from_encoder(cfg, enc, 1, 1)
        norm = float(net.encoder.state_dict()[deep].norm())
        if rescale:
            assert norm < 0.8 * saved  # back near a fresh init's norm
        else:
            assert norm == pytest.approx(saved, rel=1e-6)
    with pytest.raises(btunet.BTUnetError, match="encoder_rescale"):
        btunet.FinetuneConfig(encoder_rescale="yes")


def test_encoder_lr_ramps_from_zero():
    assert [encoder_lr_factor(s, 4) for s in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert encoder_lr_factor(0, 0) == 1.0


def test_finetune_starts_from_an_encoder_with_batchnorm_statistics_of_its_images(
        small_sample, fast_pretrain_config, fast_finetune_config):
    import dataclasses
    images = sorted((small_sample / "images").iterdir())[:1]
    masks = sorted((small_sample / "masks").iterdir())[:1]
    enc = btunet.pretrain(images, fast_pretrain_config)
    key = "blocks.0.body.0.1.running_mean"
    def built(**kw):
        return btunet.finetune(images, masks, dataclasses.replace(fast_finetune_config, epochs=0, **kw),
                               encoder=enc)
    refit, kept = built(), built(encoder_refit_bn=False)
    assert torch.equal(kept.encoder.state_dict()[key], enc.encoder_state[key])
    assert not torch.allclose(refit.encoder.state_dict()[key], enc.encoder_state[key], atol=1e-3)
    # only the statistics change: the weights are the pre-trained ones
    w = "blocks.0.body.0.0.0.weight"
    assert torch.equal(refit.encoder.state_dict()[w], enc.encoder_state[w])


# ------------------------------------------------------------------------------- built-in encoder
def test_builtin_encoder_is_packaged_with_provenance_and_loads_safely():
    tensors, meta = load_checkpoint(BUILTIN_PATH, kind="encoder")  # the safe loader, all checks
    assert meta.model.name == "unet"
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {torch.float16}  # half the size
    prov = builtin_metadata()["provenance"]
    for key in ("data", "data_files", "epochs", "steps", "wall_time_s", "cpu_threads", "seed", "final_loss",
                "btunet_version", "date", "command"):
        assert prov.get(key) not in (None, "", []), key
    assert prov["steps"] >= prov["epochs"] >= 1
    assert not any("bbbc007" in f.lower() for f in prov["data_files"])  # held out for measuring
    enc = as_encoder("builtin")
    assert isinstance(enc, PretrainedEncoder) and enc.variant == "unet"
    assert all(v.dtype == torch.float32 for v in enc.encoder_state.values() if v.is_floating_point())
    text = describe_builtin()
    assert f"{prov['epochs']} epochs" in text and prov["data"] in text


def test_finetune_encoder_builtin_end_to_end(small_sample, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert main(["finetune", "--images", str(small_sample / "images"), "--masks", str(small_sample / "masks"),
                 "--encoder", "builtin", "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2",
                 "--batch-size", "4", "--patch-size", "64", "--device", "cpu"]) == 0
    model = btunet.load_model(out)
    assert model.metadata["encoder"]["provenance"]["data_files"] == builtin_metadata()["provenance"]["data_files"]
    # the model starts from the packaged weights (a pointwise conv moves little in 2 steps)
    w = "blocks.3.body.1.0.1.weight"
    packaged = as_encoder("builtin").encoder_state[w]
    fresh = create_model("unet").encoder.state_dict()[w]
    got = model.encoder.state_dict()[w]
    assert (got - packaged).norm() < (got - fresh).norm()
    capsys.readouterr()
    assert main(["info", "builtin"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["storage"] == "float16"


def test_builtin_through_the_api(small_sample, fast_finetune_config):
    image = tifffile.imread(sorted((small_sample / "images").iterdir())[0])
    mask = tifffile.imread(sorted((small_sample / "masks").iterdir())[0])
    net = btunet.finetune([image], [(mask > 0).astype(np.uint8)], fast_finetune_config, encoder="builtin")
    assert net.metadata["encoder"]["epochs"] == builtin_metadata()["epochs"]


def test_builtin_refuses_another_variant(small_sample, fast_finetune_config):
    import dataclasses
    with pytest.raises(btunet.BTUnetError, match="pre-trained for 'unet'"):
        btunet.finetune([small_sample / "images"], [small_sample / "masks"],
                        dataclasses.replace(fast_finetune_config, model="attention_unet"), encoder="builtin")
