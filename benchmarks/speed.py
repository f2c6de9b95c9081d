"""Speed of the engine on this machine, against the physical limits measured in the same run.

Measures the matmul peak (fp32, bf16), per-variant inference time and achieved GFLOP/s (fp32 and
the channels_last + bf16 fast path), the Dice cost of the fast path on real BBBC007 images, the
pipeline overhead of `btunet predict`, the overhead of a pre-training step over its pure
forward + backward, the fine-tuning time to 95 % of the final validation Dice, and the peak
memory of predicting a short and a long 2048 x 2048 uint16 stack from disk. Writes
docs/results_speed.md and regenerates docs/results.md.

    python benchmarks/speed.py --quick     # about 5 minutes
    python benchmarks/speed.py             # the full measurement (about 15 minutes on 2 cores)
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
import headlines  # noqa: E402
import torch  # noqa: E402
from _report import DEFAULT_DATA, ROOT, load_average, machine, stamp, table, write_section  # noqa: E402


def timed(fn, repeat: int, warmup: int = 1) -> float:
    """Best-of-``repeat`` seconds of fn() (best, not mean: other jobs share these cores)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# ------------------------------------------------------------------------------------ matmul peak
def matmul_peak(seconds: float) -> dict:
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        n = 2048
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.matmul(a, b)
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            for _ in range(4):
                torch.matmul(a, b)
            best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
        out[name] = best
    return out


# ------------------------------------------------------------------------------------ inference
def count_flops(model, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def count_bytes(model, x) -> int:
    """Bytes every aten op reads and writes in the fast path (no fusion: what eager mode moves)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from btunet.base.device import autocast

    class Bytes(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten((args, kwargs, out))[0]:
                if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                    Bytes.total += t.numel() * t.element_size()
            return out
    model.to(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(torch.device("cpu")), Bytes():
        model(x.contiguous(memory_format=torch.channels_last))
    return Bytes.total


def inference(variants: list[str], size: int, repeat: int) -> list[dict]:
    import btunet
    from btunet.pipeline.planes import as_model, predict_logits
    rows = []
    plane = np.random.default_rng(0).random((1, size, size), dtype=np.float32)
    for name in variants:
        repeat = repeat if name == "unet" else max(1, repeat - 1)
        torch.manual_seed(0)
        model = btunet.create_model(name).eval()
        flops = count_flops(model, torch.from_numpy(plane)[None])
        moved = count_bytes(model, torch.from_numpy(plane)[None])
        # what `btunet predict` runs: BatchNorm folded into the convolutions (planes.as_model)
        fused = as_model(model, torch.device("cpu"))
        t32 = timed(lambda fused=fused: predict_logits(fused.to(memory_format=torch.contiguous_format), plane,
                                                       fast=False), repeat)
        fused.to(memory_format=torch.channels_last)
        tfast = timed(lambda fused=fused: predict_logits(fused, plane, fast=True), repeat)
        model.to(memory_format=torch.channels_last)
        tunfused = timed(lambda model=model: predict_logits(model, plane, fast=True), repeat)
        mp = size * size / 1e6
        rows.append({"variant": name, "repeats": repeat, "gflop": flops / 1e9, "gbytes": moved / 1e9,
                     "fp32_ms_per_mp": 1e3 * t32 / mp, "fast_ms_per_mp": 1e3 * tfast / mp,
                     "fast_unfused_ms_per_mp": 1e3 * tunfused / mp, "fp32_gflops": flops / t32 / 1e9,
                     "fast_gflops": flops / tfast / 1e9, "load": load_average()})
        print(f"inference {name}: {rows[-1]}", flush=True)
    return rows


def profile_unet(size: int) -> str:
    """Top operators of the fast path of `unet` as `btunet predict` runs it (BatchNorm folded)."""
    import btunet
    from btunet.base.device import autocast
    from btunet.pipeline.planes import as_model
    model = as_model(btunet.create_model("unet"), torch.device("cpu")).to(memory_format=torch.channels_last)
    x = torch.randn(1, 1, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(torch.device("cpu")):
        model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(x)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [[f"`{e.key}`", e.count, f"{e.self_cpu_time_total / 1e3:.1f}",
             f"{100 * e.self_cpu_time_total / total:.0f} %"] for e in events[:8]]
    return table(["operator (self time)", "calls", "ms", "share"], rows)


def layer_probe() -> list[list[str]]:
    """ms of one op on a 16-channel 512² activation (the first U-Net level) per dtype and layout."""
    from btunet.base.device import autocast
    rows = []
    dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
    pw = torch.nn.Conv2d(16, 16, 1)
    dense = torch.nn.Conv2d(16, 16, 3, padding=1)
    bn = torch.nn.BatchNorm2d(16).eval()
    base = torch.randn(1, 16, 512, 512)
    for label, x, cl, amp in (("fp32, NCHW", base, False, False),
                              ("fp32, channels_last", base.contiguous(memory_format=torch.channels_last), True, False),
                              ("bf16 autocast, channels_last (fast path)",
                               base.bfloat16().contiguous(memory_format=torch.channels_last), True, True)):
        fmt = torch.channels_last if cl else torch.contiguous_format
        for m in (dw, pw, dense):
            m.to(memory_format=fmt)
        with torch.no_grad(), autocast(torch.device("cpu"), amp):
            ms = [1e3 * timed(fn, 5) for fn in (lambda x=x: dw(x), lambda x=x: pw(x), lambda x=x: dense(x),
                                                lambda x=x: bn(x), lambda x=x: torch.relu(x), lambda x=x: x + x,
                                                lambda x=x: x.clone())]
        mb = x.numel() * x.element_size() / 1e6
        rows.append([label] + [f"{v:.1f}" for v in ms] + [f"{2 * mb / ms[-1]:.1f}"])
    return rows


# ------------------------------------------------------------------------------- fast vs fp32
def trained_model(data: Path, epochs: int, steps: int, cache: Path):
    """A unet fine-tuned on the first 2 BBBC007 images (dense), with validation history."""
    import btunet
    path = cache / f"speed_unet_bbbc007_{epochs}x{steps}.safetensors"
    if path.exists():
        return btunet.load_model(path), path
    from btunet.io.imageio import read_image
    files = sorted((data / "bbbc007" / "images").iterdir())[:2]
    images = [read_image(f) for f in files]
    masks = [(read_image(data / "bbbc007" / "masks" / f.name) > 0).astype(np.uint8) for f in files]
    cfg = btunet.FinetuneConfig(model="unet", mask_mode="dense", epochs=epochs, steps_per_epoch=steps, seed=0)
    model = btunet.finetune(images, masks, cfg)
    cache.mkdir(parents=True, exist_ok=True)
    btunet.save_model(model, path)
    return model, path


def fast_vs_fp32(model, data: Path, n_images: int) -> dict:
    import btunet
    from btunet.io.imageio import read_image
    from btunet.labels.metrics import pixel_scores
    files = sorted((data / "bbbc007" / "images").iterdir())[2:2 + n_images]
    d32, dfast, agree, maxdiff = [], [], [], 0.0
    for f in files:
        image = read_image(f)
        truth = read_image(data / "bbbc007" / "masks" / f.name)
        p32 = btunet.predict(model, image, fast=False)
        pf = btunet.predict(model, image, fast=True)
        d32.append(pixel_scores(p32.labels, truth)["dice"])
        dfast.append(pixel_scores(pf.labels, truth)["dice"])
        agree.append(pixel_scores(pf.labels, p32.labels)["dice"])
        maxdiff = max(maxdiff, float(np.abs(pf.probabilities - p32.probabilities).max()))
    return {"images": len(files), "dice_fp32": float(np.mean(d32)), "dice_fast": float(np.mean(dfast)),
            "dice_fast_vs_fp32": float(np.mean(agree)), "max_prob_diff": maxdiff}


def time_to_95(model) -> dict:
    meta = model.metadata
    hist = [d for d in meta["val_dice_history"] if d is not None]
    per_epoch = meta["seconds"] / max(1, meta["epochs"])
    best = meta.get("best_epoch") or len(hist)
    final = hist[min(best, len(hist)) - 1]  # the validation Dice of the weights that were kept
    first = next(i for i, d in enumerate(hist) if d >= 0.95 * final)
    init = "from a Barlow Twins encoder" if meta.get("encoder") else "from scratch"
    return {"init": init, "epochs": meta["epochs"], "seconds": meta["seconds"], "final_val_dice": final,
            "epoch_95": first + 1, "seconds_95": (first + 1) * per_epoch, "history": hist}


# ---------------------------------------------------------------------------------- CLI overhead
def make_stack(data: Path, planes: int, h: int, w: int, dtype) -> np.ndarray:
    """A stack of real nuclei: BBBC007 images tiled to h x w, a different arrangement per plane."""
    from btunet.io.imageio import read_image
    images = [read_image(f) for f in sorted((data / "bbbc007" / "images").iterdir())]
    out = np.empty((planes, h, w), dtype)
    scale = 257 if np.dtype(dtype) == np.uint16 else 1
    for k in range(planes):
        tiles = [images[(k + i) % len(images)] for i in range(len(images))]
        y = 0
        i = 0
        canvas = np.zeros((h, w), np.float32)
        while y < h:
            x, th = 0, 0
            while x < w:
                t = tiles[i % len(tiles)][:400, :400]
                i += 1
                hh, ww = min(400, h - y), min(400, w - x)
                canvas[y:y + hh, x:x + ww] = t[:hh, :ww]
                x += ww
                th = hh
            y += th
        out[k] = (canvas * scale).astype(dtype)
    return out


def cli_overhead(model_path: Path, data: Path, planes: int, repeat: int) -> dict:
    import tifffile

    import btunet
    from btunet.cli.commands import main as cli
    from btunet.models.base import pad_to_multiple
    stack = make_stack(data, planes, 700, 1100, np.uint8)
    model = btunet.load_model(model_path).to(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "stack.tif"
        tifffile.imwrite(src, stack)
        ends = []
        for r in range(repeat):
            t = time.perf_counter()
            rc = cli(["predict", str(model_path), str(src), "--out", str(Path(tmp) / f"out{r}")])
            ends.append(time.perf_counter() - t)
            assert rc == 0
    # pure network: the same (BatchNorm-folded) model, tiles, batches and fast path that
    # predict_logits uses, with the inputs ready
    from btunet.pipeline.planes import as_model
    from btunet.pipeline.tiling import tile_boxes
    model = as_model(model, torch.device("cpu")).to(memory_format=torch.channels_last)
    x, _, _ = pad_to_multiple(torch.zeros(1, 1, 700, 1100))
    hp, wp = x.shape[-2:]
    th, tw, boxes = tile_boxes(hp, wp)
    batches = [torch.randn(len(boxes[i:i + 4]), 1, th, tw).contiguous(memory_format=torch.channels_last)
               for i in range(0, len(boxes), 4)]
    from btunet.base.device import autocast

    def network():
        with torch.no_grad(), autocast(torch.device("cpu")):
            for b in batches:
                model(b)
    net_plane = timed(network, 2)
    whole = torch.randn(1, 1, hp, wp).contiguous(memory_format=torch.channels_last)

    def untiled():
        with torch.no_grad(), autocast(torch.device("cpu")):
            model(whole)
    untiled_plane = timed(untiled, 2)
    end = min(ends)
    return {"planes": planes, "end_to_end_s": end, "network_s": net_plane * planes,
            "overhead": end / (net_plane * planes), "tiles_per_plane": len(boxes), "tile": [th, tw],
            "tiled_pixels_ratio": len(boxes) * th * tw / (700 * 1100),
            "untiled_network_s": untiled_plane * planes, "vs_untiled": end / (untiled_plane * planes),
            "load": load_average()}


# ------------------------------------------------------------------------------ pre-training step
def pretrain_overhead(steps: int) -> dict:
    import btunet
    from btunet.base.device import autocast
    from btunet.train.augment import two_views
    from btunet.train.losses import barlow_twins_loss
    from btunet.train.pretrain import Projector, embed, random_patches
    rng = np.random.default_rng(0)
    images = [rng.random((256, 256), dtype=np.float32) for _ in range(8)]
    cfg = btunet.PretrainConfig(epochs=1, samples_per_epoch=16 * (steps + 1), seed=0)
    ticks: list[float] = []
    btunet.pretrain(images, cfg, on_progress=lambda p: ticks.append(p.elapsed_s))
    full = float(np.min(np.diff(ticks)))  # best step, like the best-of-N pure time below
    # the same step without patch sampling and augmentation: fixed views, forward + backward
    model = btunet.create_model("unet")
    enc = model.encoder.to(memory_format=torch.channels_last).train()
    proj = Projector(enc.out_channels, cfg.projector_dim).train()
    planes = [p[None] for p in images]
    batch = torch.from_numpy(random_patches(planes, cfg.batch_size, cfg.patch_size, rng))
    va, vb = (v.contiguous(memory_format=torch.channels_last) for v in two_views(batch))

    def fwd_bwd():
        with autocast(torch.device("cpu")):
            za, zb = embed(enc, proj, va), embed(enc, proj, vb)
        loss = barlow_twins_loss(za, zb)
        loss.backward()
    pure = timed(fwd_bwd, max(3, steps // 2))
    sample = timed(lambda: random_patches(planes, cfg.batch_size, cfg.patch_size, rng), 5)
    augment = timed(lambda: two_views(batch), 5)
    params = list(enc.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params)
    optim = timed(opt.step, 5)
    return {"full_step_s": full, "fwd_bwd_s": pure, "overhead": full / pure, "sampling_s": sample,
            "augment_s": augment, "optimizer_s": optim, "batch": cfg.batch_size, "patch": cfg.patch_size,
            "load": load_average()}


# ------------------------------------------------------------------------------------ peak memory
CHILD = r"""
import json, resource, sys, threading, time
peak = {"RssAnon": 0, "RssFile": 0}
def poll():
    while True:
        for line in open("/proc/self/status"):
            k = line.split(":")[0]
            if k in peak:
                peak[k] = max(peak[k], int(line.split()[1]))
        time.sleep(0.05)
threading.Thread(target=poll, daemon=True).start()
from btunet.cli.commands import main
t = time.perf_counter()
rc = main(sys.argv[1:])
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print("RESULT " + json.dumps({"rc": rc, "seconds": time.perf_counter() - t,
      "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "vm_hwm_kb": hwm[0],
      "anon_peak_kb": peak["RssAnon"], "file_peak_kb": peak["RssFile"]}))
"""


def tiny_model(path: Path) -> Path:
    """A base-4 unet checkpoint: the memory test is about the pipeline, not the network's speed."""
    import btunet
    model = btunet.create_model("unet", base_filters=4)
    model.metadata = {"note": "untrained, for the memory benchmark"}
    btunet.save_model(model, path)
    return path


def peak_memory(model_path: Path, counts: list[int], size: int) -> list[dict]:
    import tifffile
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            src = Path(tmp) / f"stack{n}.tif"
            rng = np.random.default_rng(0)
            with tifffile.TiffWriter(src) as tw:  # written plane by plane: the parent stays small
                for _ in range(n):
                    tw.write(rng.integers(0, 4096, (size, size), dtype=np.uint16), contiguous=True)
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
            before = __import__("resource").getrusage(__import__("resource").RUSAGE_CHILDREN).ru_maxrss
            proc = subprocess.run([sys.executable, "-c", CHILD, "predict", str(model_path), str(src),
                                   "--out", str(Path(tmp) / f"out{n}")], capture_output=True, text=True,
                                  env=env)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                raise RuntimeError(proc.stderr[-2000:])
            res = json.loads(line[0][7:])
            res["children_maxrss_kb"] = __import__("resource").getrusage(
                __import__("resource").RUSAGE_CHILDREN).ru_maxrss
            res.update({"planes": n, "size": size, "stack_MB": n * size * size * 2 / 1e6,
                        "children_maxrss_before_kb": before, "load": load_average()})
            rows.append(res)
            print(f"memory {n} planes: {res}", flush=True)
            src.unlink()
    return rows


# ----------------------------------------------------------------------------------------- report
def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(r: dict, args) -> str:
    peak = r["peak"]
    bf16 = peak["bf16"]
    lines = ["## Speed", "", f"Run {r.get('when', stamp())} on {r.get('machine', machine())}.", "",
             f"Command: `{r.get('command', args.command_line)}`", "",
             *[f"- {part}: kept from {src}" for part, src in r.get("sources", {}).items()],
             *([""] if r.get("sources") else []),
             ("Times are best-of-N wall-clock seconds; the 1-minute load average next to each number says "
              "how busy the 2 cores were (other jobs share them; above ~2 the numbers are pessimistic)."), "",
             "### Matrix-multiply peak", "",
             table(["dtype", "GFLOP/s (2048² matmul)"], [["fp32", f"{peak['fp32']:.0f}"], ["bf16", f"{bf16:.0f}"]]),
             f"\nload {peak['load']}", "",
             f"### Inference per variant ({args.size}² plane, `predict_logits`, one tile)", "",
             ("FLOPs from `torch.utils.flop_counter.FlopCounterMode` (2 per multiply-add; FFTs of the "
              "spectral pooling are not counted). Both columns use what `btunet predict` runs: BatchNorm "
              "folded into the convolutions. Fast path = channels_last + bf16 autocast; the column "
              "\"fast, BN kept\" is the fast path without the folding."), ""]
    rows = [[f"`{x['variant']}`", f"{x['gflop']:.2f}", f"{x['gbytes']:.2f}", f"{x['gflop'] / x['gbytes']:.1f}",
             f"{x['fp32_ms_per_mp']:.0f}", f"{x['fast_ms_per_mp']:.0f}",
             f"{x.get('fast_unfused_ms_per_mp', float('nan')):.0f}",
             f"{x['fp32_ms_per_mp'] / x['fast_ms_per_mp']:.2f}x", f"{x['fp32_gflops']:.1f}",
             f"{x['fast_gflops']:.1f}", f"{100 * x['fast_gflops'] / bf16:.1f} %", x["load"]] for x in r["inference"]]
    lines += [table(["variant", "GFLOP / plane", "GB moved / plane", "FLOP/byte", "fp32 ms/MP", "fast ms/MP",
                     "fast, BN kept, ms/MP", "speed-up", "fp32 GFLOP/s",
                     "fast GFLOP/s", "of bf16 peak", "load"], rows), ""]
    if r.get("profile"):
        lines += ["Where the time of `unet` (fast path, BatchNorm folded) goes, per operator:", "", r["profile"], ""]
    if r.get("layers") and r["inference"]:
        bw = float(r["layers"][-1][-1])
        lines += [f"GB moved = bytes read and written by every aten op of the fast path (eager mode, no "
                  f"fusion; counted with a `TorchDispatchMode`). With the measured copy bandwidth of "
                  f"{bw:.1f} GB/s (bf16, channels_last, below) the memory traffic alone takes: " + ", ".join(
                      f"`{x['variant']}` {1e3 * x['gbytes'] / bw / ((args.size ** 2) / 1e6):.0f} ms/MP "
                      f"(a ceiling of {x['gflop'] / (x['gbytes'] / bw):.0f} GFLOP/s)" for x in r["inference"])
                  + f"; the bf16 matmul peak would need at least {bf16 / bw:.0f} FLOP/byte.", ""]
    if r.get("layers"):
        lines += [("One op on a 16 x 512 x 512 activation (the first level of `unet`), ms, and the copy "
                   "bandwidth:"), "",
                  table(["dtype / layout", "depthwise 3x3", "pointwise 1x1", "dense 3x3", "BatchNorm (eval)",
                         "ReLU", "add", "copy", "copy GB/s"], r["layers"]), ""]
    fv = r.get("fast_vs_fp32")
    if fv:
        lines += ["### Fast path against fp32 on real images", "",
                  (f"`unet` fine-tuned on the first 2 BBBC007 images, predicted on the next {fv['images']}: "
                   f"Dice to ground truth fp32 {fv['dice_fp32']:.4f}, fast {fv['dice_fast']:.4f} (difference "
                   f"{abs(fv['dice_fp32'] - fv['dice_fast']):.4f}); Dice between the two label images "
                   f"{fv['dice_fast_vs_fp32']:.4f}; max probability difference {fv['max_prob_diff']:.4f}."), ""]
    c = r.get("cli")
    if c:
        lines += [f"### Pipeline overhead of `btunet predict` ({c['planes']} x 700 x 1100 uint8 stack)", "",
                  (f"End-to-end `btunet.cli.commands.main(['predict', ...])` (load checkpoint, read, normalise, tile, "
                   f"blend, threshold, write) {c['end_to_end_s']:.1f} s; pure network time for the same "
                   f"{c['tiles_per_plane']} tiles per plane in the same batches {c['network_s']:.1f} s: overhead "
                   f"**{c['overhead']:.2f}x** (load {c['load']}). The {c.get('tile', ['?', '?'])[0]} x "
                   f"{c.get('tile', ['?', '?'])[1]} tiles with 256 px overlap cover "
                   f"{c['tiled_pixels_ratio']:.2f}x the plane's pixels; one untiled forward of the padded plane "
                   f"would take {c['untiled_network_s']:.1f} s for the stack (end-to-end / that = "
                   f"{c['vs_untiled']:.2f}x)."), ""]
    p = r.get("pretrain")
    if p:
        lines += ["### Pre-training step", "",
                  (f"Full `pretrain` step (batch {p['batch']} x {p['patch']}²: patch sampling, two augmented "
                   f"views, forward, backward, AdamW) {p['full_step_s']:.2f} s; pure forward + backward of the "
                   f"same batch {p['fwd_bwd_s']:.2f} s: overhead **{p['overhead']:.2f}x** (load {p['load']}). "
                   f"Parts: patch sampling {1e3 * p['sampling_s']:.0f} ms, augmentation of both views "
                   f"{1e3 * p['augment_s']:.0f} ms, optimizer step {1e3 * p['optimizer_s']:.0f} ms."), ""]
    f = r.get("finetune")
    if f:
        hist = ", ".join(f"{d:.3f}" for d in f["history"])
        lines += ["### Fine-tuning time to 95 % of the final validation Dice", "",
                  (f"`unet` {f.get('init', 'from scratch')} on 2 dense BBBC007 images (engine defaults, "
                   f"early stopping), {f['epochs']} epochs in {f['seconds']:.0f} s: "
                   f"final validation Dice {f['final_val_dice']:.3f}, 95 % of it reached after epoch "
                   f"{f['epoch_95']}, i.e. **{f['seconds_95']:.0f} s**. Validation Dice per epoch: {hist}."), ""]
    m = r.get("memory")
    if m:
        rows = [[x["planes"], f"{x['size']}²", f"{x['stack_MB']:.0f}", f"{x['seconds']:.0f}",
                 f"{x.get('vm_hwm_kb', x['ru_maxrss_kb']) / 1024:.0f}", f"{x['anon_peak_kb'] / 1024:.0f}",
                 f"{x['file_peak_kb'] / 1024:.0f}", x["load"]] for x in m]
        lines += ["### Peak memory of `btunet predict` on a uint16 stack from disk", "",
                  ("Each run in a fresh subprocess (high-water RSS = `VmHWM` of the process after the "
                   "command; anonymous and file-backed RSS sampled from /proc every 50 ms). Model: a base-4 `unet` "
                   "(the network size does not change what the pipeline holds)."), "",
                  table(["planes", "plane", "stack MB", "seconds", "max RSS MB", "anon RSS MB",
                         "file RSS MB", "load"], rows), ""]
    lines += ["### Targets", "", table(["target", "measured", "verdict"], targets(r), "lll"), ""]
    notes = Path(args.notes)
    if args.notes and notes.exists():
        lines += [notes.read_text().rstrip()]
    return "\n".join(lines)


def targets(r: dict) -> list[list[str]]:
    rows = []
    bf16 = r["peak"]["bf16"]
    unet = next((x for x in r["inference"] if x["variant"] == "unet"), None)
    if unet:
        share = unet["fast_gflops"] / bf16
        rows.append(["`unet` inference >= 75 % of the bf16 matmul peak", f"{100 * share:.1f} %",
                     verdict(share >= 0.75)])
    if r.get("fast_vs_fp32"):
        fv = r["fast_vs_fp32"]
        diff = abs(fv["dice_fp32"] - fv["dice_fast"])
        rows.append(["fast-path Dice within 0.005 of fp32", f"{diff:.4f}", verdict(diff <= 0.005)])
    if r.get("cli"):
        rows.append(["`btunet predict` overhead <= 1.15x", f"{r['cli']['overhead']:.2f}x",
                     verdict(r["cli"]["overhead"] <= 1.15)])
    if r.get("pretrain"):
        rows.append(["pre-training step overhead <= 1.2x", f"{r['pretrain']['overhead']:.2f}x",
                     verdict(r["pretrain"]["overhead"] <= 1.2)])
    if r.get("memory") and len(r["memory"]) >= 2:
        a, b = r["memory"][0], r["memory"][-1]

        def peak(x):
            return x.get("vm_hwm_kb", x["ru_maxrss_kb"])
        ratio = peak(b) / peak(a)
        rows.append([f"peak memory, {b['planes']} planes within 10 % of {a['planes']} planes",
                     f"{ratio:.2f}x ({peak(a) / 1024:.0f} -> {peak(b) / 1024:.0f} MB)",
                     verdict(ratio <= 1.10)])
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats, smaller stacks (about 5 minutes)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--variants", nargs="+", help="variants to time (default: all)")
    p.add_argument("--size", type=int, default=512, help="plane side for the inference timing (default 512)")
    p.add_argument("--model", help="a fine-tuned unet checkpoint for the fast-vs-fp32 test (default: train one)")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["peak", "inference", "profile", "fast", "cli", "pretrain", "finetune", "memory"],
                   help="parts to leave out")
    p.add_argument("--cli-planes", type=int, help="planes of the 700 x 1100 CLI stack (default 20; 4 with --quick)")
    p.add_argument("--memory-planes", type=int, nargs="+", help="stack lengths of the memory test "
                   "(default 16 64; 4 16 with --quick)")
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache"), help="where the trained model is kept")
    p.add_argument("--notes", default=str(ROOT / "benchmarks" / "speed_notes.md"),
                   help="markdown appended to the section (the interpretation of the numbers)")
    p.add_argument("--report-only", action="store_true", help="rewrite the section from the --json file")
    p.add_argument("--json", default=str(ROOT / "docs" / "data" / "speed.json"), help="raw results")
    args = p.parse_args(argv)
    args.command_line = "python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    return args


def main(argv=None) -> int:
    import btunet
    args = parse_args(argv)
    data = Path(args.data)
    q = args.quick
    variants = args.variants or list(btunet.MODELS)
    if args.report_only:
        r = json.loads(Path(args.json).read_text())
        write_section("results_speed.md", report(r, args))
        headlines.update()
        print(report(r, args))
        return 0
    r: dict = {"when": stamp(), "machine": machine(), "command": args.command_line}
    previous = json.loads(Path(args.json).read_text()) if args.skip and Path(args.json).exists() else {}
    keys = {"inference": ["inference"], "profile": ["profile", "layers"], "fast": ["fast_vs_fp32"],
            "cli": ["cli"], "pretrain": ["pretrain"], "finetune": ["finetune"], "memory": ["memory"]}
    r["sources"] = {}  # parts left out keep the numbers of the run that measured them, said so in the report
    for part in args.skip:
        if part in keys and all(key in previous for key in keys[part]):
            for key in keys[part]:
                r[key] = previous[key]
            r["sources"][part] = previous.get("sources", {}).get(part) or \
                f"`{previous.get('command')}`, {previous.get('when')}"
    print(f"load average at start: {load_average()}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part, so a stopped run keeps what it measured
        Path(args.json).write_text(json.dumps(r, indent=1, default=str))
    r["peak"] = {**matmul_peak(2.0 if q else 5.0), "load": load_average()}
    save()
    print(f"matmul peak: {r['peak']}", flush=True)
    if "inference" not in args.skip:
        r["inference"] = inference(variants, args.size, 1 if q else 2)
        save()
    if "profile" not in args.skip:
        r["profile"] = profile_unet(args.size)
        r["layers"] = layer_probe()
        save()
        print(r["profile"], r["layers"], flush=True)
    cache = Path(args.cache)
    model = model_path = None
    if "fast" not in args.skip or "cli" not in args.skip or "finetune" not in args.skip:
        if args.model:
            model_path = Path(args.model)
            model = btunet.load_model(model_path)
        else:
            model, model_path = trained_model(data, 4 if q else 60, 5 if q else 25, cache)
    if "finetune" not in args.skip and model.metadata.get("val_dice_history"):
        r["finetune"] = time_to_95(model)
        save()
        print(f"finetune: {r['finetune']}", flush=True)
    if "fast" not in args.skip:
        r["fast_vs_fp32"] = fast_vs_fp32(model, data, 4 if q else 12)
        save()
        print(f"fast vs fp32: {r['fast_vs_fp32']}", flush=True)
    if "cli" not in args.skip:
        r["cli"] = cli_overhead(model_path, data, args.cli_planes or (4 if q else 20), 1)
        save()
        print(f"cli: {r['cli']}", flush=True)
    if "pretrain" not in args.skip:
        r["pretrain"] = pretrain_overhead(4 if q else 8)
        save()
        print(f"pretrain: {r['pretrain']}", flush=True)
    if "memory" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            tiny = tiny_model(Path(tmp) / "tiny.safetensors")
            r["memory"] = peak_memory(tiny, args.memory_planes or ([4, 16] if q else [16, 64]),
                                      1024 if q else 2048)
            save()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(r, indent=1, default=str))
    text = report(r, args)
    write_section("results_speed.md", text)
    headlines.update()  # the README's speed headline, from the record just written
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
