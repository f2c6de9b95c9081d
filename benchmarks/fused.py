"""Speed where users wait: fused CPU inference, the fine-tuning step, and a shared CPU.

1. A 2048 x 2048 BBBC007 mosaic with a default-width `unet`: one eager fp32 forward of the whole
   image (what a plain PyTorch user runs), `btunet.predict` on the eager fast path (the default before the
   fused runtime: channels_last, bf16 where the CPU has it) and `btunet.predict` with its defaults (ONNX
   Runtime), end to end, best of ``--repeat``; plus the one-time export. Same thread count for every row.
2. Dice on the 12 BBBC007 test images of a `unet` fine-tuned on the first 2: eager default
   against the fused runtime.
3. Fine-tuning steps per second (the loop of `btunet.finetune`: patch sampling, augmentation,
   forward, loss, backward, Adam), before (`nn.Dropout`, per-parameter Adam) and after.
4. Fine-tuning steps per second with and without one busy competitor (`python -c "while True:
   pass"`), each in a fresh process: 2 threads with OpenMP's default waiting (before) against the
   thread policy of `btunet.base.threads` with passive waiting (after).

The 1-minute load average is recorded beside every timing: other jobs share these cores.
Writes docs/results_fused.md and appends a record to docs/data/fused.jsonl (~5 minutes).

    python benchmarks/fused.py
    python benchmarks/fused.py --report-only   # the page again from the last record (after a notes edit)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import DEFAULT_DATA, ROOT, load_average, machine, stamp, table, write_section  # noqa: E402

RECORD = ROOT / "docs" / "data" / "fused.jsonl"
NOTES = Path(__file__).resolve().parent / "fused_notes.md"


def load() -> float:
    return round(os.getloadavg()[0], 2)


def best(fn, repeat: int) -> tuple[float, float]:
    """(best seconds of ``repeat`` runs after one warm-up, load average after them)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), load()


def mosaic(data: Path, size: int = 2048) -> np.ndarray:
    from btunet.io.imageio import read_image
    files = sorted((data / "bbbc007" / "images").iterdir())
    tiles = [read_image(f)[:400, :400] for f in files]
    n = -(-size // 400)
    return np.block([[tiles[(i * n + j) % len(tiles)] for j in range(n)] for i in range(n)])[:size, :size]


def trained_unet(data: Path, cache: Path):
    """A default-width `unet` fine-tuned (dense) on the first 2 BBBC007 images, cached."""
    import btunet
    path = cache / "fused_unet_bbbc007.safetensors"
    if path.exists():
        return btunet.load_model(path)
    from btunet.io.imageio import read_image
    files = sorted((data / "bbbc007" / "images").iterdir())[:2]
    images = [read_image(f) for f in files]
    masks = [(read_image(data / "bbbc007" / "masks" / f.name) > 0).astype(np.uint8) for f in files]
    cfg = btunet.FinetuneConfig(model="unet", mask_mode="dense", epochs=6, steps_per_epoch=25, seed=0)
    model = btunet.finetune(images, masks, cfg)
    cache.mkdir(parents=True, exist_ok=True)
    btunet.save_model(model, path)
    return model


# ------------------------------------------------------------------------------------ inference
def inference(model, image: np.ndarray, repeat: int) -> dict:
    import torch

    import btunet
    from btunet.models import runtime
    from btunet.pipeline.planes import as_model, plane_layout, predict_logits
    mp = image.size / 1e6
    net32 = as_model(model, torch.device("cpu"), fast=False)
    pixels = next(plane_layout(image, 1).planes(image))[1]
    rows = {}

    def eager_whole():  # the plain PyTorch way: the whole image in one fp32 forward
        predict_logits(net32, pixels, tile=None, fast=False)
    rows["eager fp32 forward, whole image"] = best(eager_whole, repeat)
    rows["btunet.predict, eager fast path (before)"] = best(lambda: btunet.predict(model, image, runtime="eager"),
                                                           repeat)
    runtime.clear_sessions()
    with tempfile.TemporaryDirectory() as folder:
        os.environ["BTUNET_CACHE_DIR"] = folder
        t = time.perf_counter()
        btunet.predict(model, image)  # exports, then predicts
        first = time.perf_counter() - t, load()
        rows["btunet.predict default, fused (after)"] = best(lambda: btunet.predict(model, image), repeat)
        fused = btunet.predict(model, image)
    eager = btunet.predict(model, image, runtime="eager", fast=False)
    out = {"size": image.shape[0], "threads": torch.get_num_threads(), "repeat": repeat,
           "rows": [{"path": k, "seconds": s, "ms_per_mp": s / mp * 1e3, "load": ld} for k, (s, ld) in rows.items()],
           "first_call_s": first[0], "first_call_load": first[1],
           "max_prob_diff_vs_fp32": float(np.abs(fused.probabilities - eager.probabilities).max()),
           "labels_differing_vs_fp32": float((fused.labels != eager.labels).mean())}
    whole, after = out["rows"][0]["seconds"], out["rows"][2]["seconds"]
    out["speedup_vs_eager_fp32"] = whole / after
    out["speedup_vs_before"] = out["rows"][1]["seconds"] / after
    return out


def dice_check(model, data: Path) -> dict:
    import btunet
    from btunet.io.imageio import read_image
    from btunet.labels.metrics import pixel_scores
    files = sorted((data / "bbbc007" / "images").iterdir())[2:]
    before, after = [], []
    for f in files:
        image, truth = read_image(f), read_image(data / "bbbc007" / "masks" / f.name)
        before.append(pixel_scores(btunet.predict(model, image, runtime="eager").labels, truth)["dice"])
        after.append(pixel_scores(btunet.predict(model, image, runtime="onnx").labels, truth)["dice"])
    return {"images": len(files), "dice_before": float(np.mean(before)), "dice_after": float(np.mean(after)),
            "load": load()}


# ------------------------------------------------------------------------------------ training
STEPS = r"""
import json, os, sys, time
legacy, threads, steps = sys.argv[1] == "legacy", sys.argv[2], int(sys.argv[3])
if threads == "policy":
    import btunet.base.threads  # sets OMP_WAIT_POLICY=PASSIVE before torch starts
import numpy as np, torch
from pathlib import Path
import btunet
import btunet.base.threads
from btunet.train.augment import finetune_augment
from btunet.pipeline.data import load_sources
from btunet.base.device import autocast
from btunet.train.training_set import annotated_planes, head_for, PatchSampler
from btunet.io.imageio import read_image
from btunet.train.losses import segmentation_loss
from btunet.models.dropout import Dropout
n_threads = (btunet.base.threads.configure_threads() if threads == "policy"
             else btunet.base.threads.configure_threads(int(threads)))
data = Path(sys.argv[4])
files = sorted((data / "images").iterdir())[:2]
images = [read_image(f) for f in files]
masks = [(read_image(data / "masks" / f.name) > 0).astype(np.uint8) for f in files]
cfg = btunet.FinetuneConfig(model="unet", mask_mode="dense", seed=0)
sources, labels = load_sources(images), load_sources(masks)
planes = annotated_planes(sources, labels, 1, "dense", cfg.patch_size, head_for(labels, cfg))
rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
sampler = PatchSampler(planes, cfg.patch_size, cfg.annotated_fraction, rng)
torch.manual_seed(0)
net = btunet.create_model("unet").train().to(memory_format=torch.channels_last)
if legacy:
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Dropout):
                setattr(parent, name, torch.nn.Dropout(child.p))
opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, foreach=not legacy)
def step():
    x, t, w = (torch.from_numpy(a) for a in sampler.batch(cfg.batch_size))
    x, t, w = finetune_augment(x, t, w, 0.0, True, generator=gen)
    # before: bf16 autocast on every CPU; after: only where bf16 is native (btunet.base.device)
    with (torch.autocast("cpu", dtype=torch.bfloat16) if legacy else autocast(torch.device("cpu"))):
        logits = net(x.contiguous(memory_format=torch.channels_last))
    loss = segmentation_loss(logits, t, w, 1, False)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()
for _ in range(2):
    step()
start = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"steps_per_s": steps / (time.perf_counter() - start), "threads": n_threads,
                  "wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "load": os.getloadavg()[0]}))
"""


def steps_per_s(legacy: bool, threads: str, steps: int, data: Path, busy: bool = False) -> dict:
    """Fine-tuning steps/s in a fresh process (OpenMP settings apply at torch's start)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if competitor is not None:
            time.sleep(1.0)  # let it run before the thread policy looks at the load
        out = subprocess.run([sys.executable, "-c", STEPS, "legacy" if legacy else "new", threads, str(steps),
                              str(data / "bbbc007")], env=env, capture_output=True, text=True, timeout=600)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "legacy": legacy, "mode": threads,
            "busy_competitor": busy}


# ------------------------------------------------------------------------------------ report
def report(r: dict) -> str:
    inf, d = r["inference"], r["dice"]
    rows = [[x["path"], f"{x['seconds']:.2f}", f"{x['ms_per_mp']:.0f}",
             f"{inf['rows'][0]['seconds'] / x['seconds']:.1f}x", f"{x['load']:.2f}"] for x in inf["rows"]]
    steps, native_bf16 = r["steps"], r.get("native_bf16", True)
    step_rows = [[("before" if s["legacy"] else "after"), s["threads"], s["wait_policy"],
                  "yes" if s["busy_competitor"] else "no", f"{s['steps_per_s']:.2f}", f"{s['load']:.2f}"]
                 for s in steps]
    by = {(s["legacy"], s["mode"], s["busy_competitor"]): s["steps_per_s"] for s in steps}
    def ratio(a, b):
        return f"{by[a] / by[b]:.2f}" if a in by and b in by else "n/a"
    code_alone = ratio((False, "policy", False), (True, "policy", False))
    return f"""## Fused inference, training steps and shared cores

Run {r['date']} on {r['machine']}; `benchmarks/fused.py`. The 1-minute load average is given beside
every timing (above 2, other jobs shared these 2 cores), so absolute times are upper bounds and only rows of
one run compare. Data: docs/data/fused.jsonl.

### Inference, {inf['size']}² BBBC007 mosaic, default-width `unet`, {inf['threads']} thread(s)

Best of {inf['repeat']} runs after a warm-up; end to end (normalisation, tiles, network, sigmoid,
threshold) except the first row, which is the network alone on the whole image.

{table(["path", "seconds", "ms/MP", "speed-up", "load"], rows, "lrrrr")}

The first fused call on a new model also exports it: {inf['first_call_s']:.1f} s (load
{inf['first_call_load']:.2f}) for export, session and prediction together; later calls, and later
processes (the ONNX file is cached under the user cache folder, keyed by the weights), skip it.
Fused against eager fp32: largest probability difference {inf['max_prob_diff_vs_fp32']:.1e},
{inf['labels_differing_vs_fp32'] * 100:.3f} % of labels differ (the larger tile changes the
blending; the network itself agrees to 1e-6).

Dice on the {d['images']} BBBC007 test images (`unet` fine-tuned on the first 2): eager fast-path
default {d['dice_before']:.4f}, fused {d['dice_after']:.4f} (difference
{abs(d['dice_after'] - d['dice_before']):.4f}; load {d['load']:.2f}).

### Fine-tuning steps per second (`unet`, batch 8 x 128², the loop of `btunet.finetune`)

"before": `nn.Dropout`, per-parameter Adam and bf16 autocast on every CPU, with 2 threads and
OpenMP's default waiting; "after": the numpy-drawn dropout mask, multi-tensor Adam, bf16 only where
the CPU has it natively (this one: {"yes" if native_bf16 else "no, so fp32"}), and the thread policy
of `btunet.base.threads` with passive waiting. Each row is a fresh process; "busy competitor" runs
`python -c "while True: pass"` beside it.

{table(["code", "threads", "OpenMP wait", "busy competitor", "steps/s", "load"], step_rows, "lrllrr")}

The code alone (same thread policy, no competitor): after / before = {code_alone}x.
The whole change without a competitor: {ratio((False, "policy", False), (True, "2", False))}x; with one:
{ratio((False, "policy", True), (True, "2", True))}x. With a busy competitor, each setting's rate as a share of
its own rate without one: before {ratio((True, "2", True), (True, "2", False))}, after
{ratio((False, "policy", True), (False, "policy", False))}.

{NOTES.read_text() if NOTES.exists() else ""}"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: the policy)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the page from the last record")
    a = parser.parse_args(argv)
    if a.report_only:
        write_section("results_fused.md", report(json.loads(RECORD.read_text().splitlines()[-1])))
        return 0
    import btunet.base.threads
    btunet.base.threads.configure_threads(a.threads)
    model = trained_unet(a.data, ROOT / "benchmarks" / ".cache")
    from btunet.base.device import cpu_has_native_bf16
    r = {"date": stamp(), "machine": machine(), "load_start": load_average(), "native_bf16": cpu_has_native_bf16()}
    r["inference"] = inference(model, mosaic(a.data), a.repeat)
    print(json.dumps(r["inference"]), flush=True)
    r["dice"] = dice_check(model, a.data)
    print(json.dumps(r["dice"]), flush=True)
    r["steps"] = []
    for legacy, threads in ((True, "2"), (True, "policy"), (False, "policy")):
        for busy in (False, True):
            r["steps"].append(steps_per_s(legacy, threads, a.steps, a.data, busy))
            print(json.dumps(r["steps"][-1]), flush=True)
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    with RECORD.open("a") as f:
        f.write(json.dumps(r) + "\n")
    write_section("results_fused.md", report(r))
    import headlines
    headlines.update()
    print(f"wrote docs/results_fused.md and {RECORD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
