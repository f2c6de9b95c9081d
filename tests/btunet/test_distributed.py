"""Distributed pre-training: global-batch loss and gradients, and torchrun end to end (CPU, gloo)."""
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import torch

from btunet import read_metadata
from btunet.cli.commands import main
from btunet.train.distributed import local_batch_size
from btunet.train.losses import barlow_twins_loss, global_barlow_twins_loss

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Runs in two fresh processes (RANK 0 and 1): a script, so that the children import the
# installed package and not this test folder.
STEP_WORKER = """
import torch
from btunet.train.distributed import synchronise_batchnorm
from btunet.train.losses import barlow_twins_loss, global_barlow_twins_loss
from btunet.models import create_model
from btunet.train.pretrain import Projector, TwinEmbedder, twin_loss

WORLD = 2


def make_twin():
    # a small, deterministic encoder + projector without dropout (no randomness in a step)
    torch.manual_seed(0)
    encoder = create_model("unet", base_filters=4, dropout=0.0).encoder
    return TwinEmbedder(encoder, Projector(encoder.out_channels, 24)).train()


torch.set_num_threads(1)
torch.distributed.init_process_group("gloo")
rank = torch.distributed.get_rank()
rows = slice(rank * 4, rank * 4 + 4)
g = torch.Generator().manual_seed(1)
view_a, view_b = torch.rand(8, 1, 32, 32, generator=g), torch.rand(8, 1, 32, 32, generator=g)

# the loss function alone: same value; gradient = WORLD x the single-process one (DDP averages)
z_a, z_b = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
ref_a, ref_b = z_a.clone().requires_grad_(), z_b.clone().requires_grad_()
reference = barlow_twins_loss(ref_a, ref_b, 5e-3)
reference.backward()
loc_a, loc_b = z_a[rows].clone().requires_grad_(), z_b[rows].clone().requires_grad_()
loss = global_barlow_twins_loss(loc_a, loc_b, 5e-3)
loss.backward()
torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
torch.testing.assert_close(loc_a.grad / WORLD, ref_a.grad[rows], rtol=1e-4, atol=1e-6)
torch.testing.assert_close(loc_b.grad / WORLD, ref_b.grad[rows], rtol=1e-4, atol=1e-6)

# one training step: one process on the global batch vs DDP with each rank on its half
single = make_twin()
reference = barlow_twins_loss(*single(view_a, view_b), 5e-3)
reference.backward()
twin = make_twin()
twin.encoder, twin.projector = synchronise_batchnorm(twin.encoder, twin.projector,
                                                     torch.device("cpu"), "all")
ddp = torch.nn.parallel.DistributedDataParallel(twin)
loss = twin_loss(ddp, view_a[rows], view_b[rows], 5e-3)
loss.backward()
torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
# (relative to the largest gradient: conv biases in front of a batch norm have a true
# gradient of 0, so theirs are pure rounding noise in both runs)
grads = dict(twin.named_parameters())
scale = max(p.grad.abs().max().item() for p in single.parameters())
worst = max((grads[n].grad - p.grad).abs().max().item() for n, p in single.named_parameters()) / scale
assert worst < 1e-4, worst
# the batch-norm running statistics match too (global, not per-rank, batches)
buffers = dict(twin.named_buffers())
for name, b in single.named_buffers():
    if b.dtype.is_floating_point:
        torch.testing.assert_close(buffers[name], b, rtol=1e-4, atol=1e-6)
torch.distributed.destroy_process_group()
print(f"rank {rank}: loss {loss.item():.6f} = {reference.item():.6f}, worst relative gradient error {worst:.2e}")
"""


def test_global_loss_without_a_process_group_is_the_plain_loss():
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    torch.testing.assert_close(global_barlow_twins_loss(z_a, z_b), barlow_twins_loss(z_a, z_b))
    assert [local_batch_size(9, 2, r) for r in range(2)] == [5, 4]


def _clean_env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def test_two_ranks_give_the_single_process_loss_and_gradients(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(STEP_WORKER)
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**_clean_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                                   "WORLD_SIZE": str(WORLD), "RANK": str(r), "LOCAL_RANK": str(r)})
             for r in range(WORLD)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "worst relative gradient error" in out


def _torchrun(args, timeout=240, script=None):
    env = _clean_env()
    target = [str(script)] if script else ["-m", "btunet"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           *target, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_torchrun_pretrain_writes_an_encoder_finetune_accepts(small_sample, tmp_path):
    encoder = tmp_path / "encoder.safetensors"
    run = _torchrun(["pretrain", str(small_sample / "images"), "--out", str(encoder), "--epochs", "1",
                     "--batch-size", "32", "--patch-size", "32", "--device", "cpu"])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("saved encoder") == 1            # rank 0 only
    meta = read_metadata(encoder)
    assert meta["distributed"]["world_size"] == WORLD and meta["distributed"]["backend"] == "gloo"
    assert meta["trained_on"]["files"] == sorted(p.name for p in (small_sample / "images").iterdir())
    assert meta["trained_on"]["planes"] == 4 and np.isfinite(meta["loss_history"]).all()
    model = tmp_path / "model.safetensors"
    assert main(["finetune", "--images", str(small_sample / "images"), "--masks", str(small_sample / "masks"),
                 "--encoder", str(encoder), "--out", str(model), "--epochs", "1", "--steps-per-epoch", "2",
                 "--patch-size", "64", "--batch-size", "2", "--device", "cpu"]) == 0
    assert model.is_file()


def test_a_failing_rank_stops_the_whole_run(small_sample, tmp_path):
    script = tmp_path / "fail_rank1.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        import btunet.train.pretrain
        module = sys.modules["btunet.train.pretrain"]
        original, calls = module.random_patches, [0]
        def patches(*args, **kwargs):
            calls[0] += 1
            if os.environ["RANK"] == "1" and calls[0] == 3:
                raise RuntimeError("simulated failure on rank 1")
            return original(*args, **kwargs)
        module.random_patches = patches
        from btunet.cli.commands import main
        sys.exit(main(sys.argv[1:]))
    """))
    encoder = tmp_path / "encoder.safetensors"
    run = _torchrun(["pretrain", str(small_sample / "images"), "--out", str(encoder), "--epochs", "1",
                     "--batch-size", "16", "--patch-size", "32", "--device", "cpu"], timeout=120, script=script)
    assert run.returncode != 0
    assert "btunet: pretrain rank 1 of 2 stopped: RuntimeError: simulated failure on rank 1" in run.stderr
    assert not encoder.exists()
