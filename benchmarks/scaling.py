"""Prediction throughput on a zarr volume: in memory, local threads, and 1 / 2 dask workers.

    python benchmarks/scaling.py                       # 16 x 1024 x 1024 uint16, unet
    python benchmarks/scaling.py --planes 4 --size 512 --workers 1 2 4 --model model.safetensors

Writes a zarr volume to a temporary folder, predicts it with ``btunet.predict`` (the in-memory
baseline) and with ``btunet.infer.chunked.predict_chunked`` (zarr in, zarr out) on local threads and on a
``LocalCluster`` with N single-threaded worker processes; prints a table in megapixels per second
and appends it, with the machine's load, to docs/scaling_results.md. Without ``--model`` it uses a
randomly initialised model (throughput does not depend on the weights). Cluster start-up is not
timed (nor importing torch on the workers); loading the model on the workers is.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from btunet.infer.chunked import DEFAULT_DEPTH  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "scaling_results.md"


def load_average() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def make_volume(path: Path, planes: int, size: int, seed: int = 0) -> None:
    """Blurred-noise blobs on a dim background, uint16, stored one plane per 512 x 512 chunk."""
    import zarr
    from scipy import ndimage as ndi
    rng = np.random.default_rng(seed)
    z = zarr.create_array(str(path), shape=(planes, size, size), dtype=np.uint16,
                          chunks=(1, min(512, size), min(512, size)))
    for i in range(planes):
        blobs = ndi.gaussian_filter(rng.random((size, size), np.float32), 6)
        blobs = (blobs - blobs.mean()) / blobs.std()
        z[i] = np.clip(1000 + 800 * blobs + rng.normal(0, 60, (size, size)), 0, 65535).astype(np.uint16)


def _import_engine() -> None:
    import btunet.infer.chunked  # noqa: F401


def _peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args) -> list[tuple[str, float, float]]:
    import zarr
    from distributed import Client, LocalCluster

    from btunet import create_model, predict, save_model
    from btunet.infer.chunked import predict_chunked

    tmp = Path(tempfile.mkdtemp(prefix="btunet-scaling-"))
    try:
        model_path = Path(args.model) if args.model else None
        if model_path is None:
            torch.manual_seed(0)
            model_path = save_model(create_model("unet").eval(), tmp / "model.safetensors")
        volume = tmp / "volume.zarr"
        make_volume(volume, args.planes, args.size)
        megapixels = args.planes * args.size * args.size / 1e6
        common = {"chunks": args.chunk, "depth": args.depth, "fast": not args.exact, "device": "cpu"}
        rows = []
        # warm-up (one-time library set-up, not throughput): a small prediction in this process
        predict(str(model_path), np.zeros((256, 256), np.uint16), fast=not args.exact, device="cpu")

        def record(name: str, seconds: float, rss: str = "") -> None:
            rows.append((name, seconds, megapixels / seconds, rss))
            print(f"  {name:<50} {seconds:8.1f} s  {megapixels / seconds:7.3f} MP/s  {rss}", flush=True)

        if not args.skip_in_memory:
            t = time.perf_counter()
            predict(str(model_path), zarr.open_array(str(volume), mode="r"), probabilities=False,
                    fast=not args.exact, device="cpu")
            record(f"in memory (btunet.predict, {torch.get_num_threads()} torch threads)",
                   time.perf_counter() - t)

        t = time.perf_counter()
        predict_chunked(model_path, volume, out=tmp / "threads.zarr", scheduler=None, num_workers=1, **common)
        record(f"chunked, local threads (1 dask thread, {torch.get_num_threads()} torch)",
               time.perf_counter() - t)

        for n in args.workers:
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                client.wait_for_workers(n)
                client.run(_import_engine)  # like start-up: import torch + btunet on every worker
                t = time.perf_counter()
                predict_chunked(model_path, volume, out=tmp / f"cluster{n}.zarr", scheduler=client, **common)
                seconds = time.perf_counter() - t
                rss = max(client.run(_peak_rss_mb).values())
                record(f"chunked, LocalCluster {n} worker(s) x 1 thread", seconds, f"{rss:.0f} MB")
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def table(rows, args, load_before: str, load_after: str) -> str:
    when = datetime.datetime.now().isoformat(timespec="minutes")
    lines = [(f"## {when} — {args.planes} x {args.size} x {args.size} uint16 zarr, chunk {args.chunk}, "
              f"depth {args.depth}, {'fp32' if args.exact else 'bf16 + channels_last'}"),
             "",
             (f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
              f"Python {platform.python_version()}. Load average (1, 5, 15 min) before: {load_before}; "
              f"after: {load_after}."),
             "",
             "| run | seconds | megapixels/s | speed-up vs 1 worker | peak worker memory |",
             "|---|---:|---:|---:|---:|"]
    one = next((s for name, s, _, _ in rows if "1 worker" in name), None)
    for name, seconds, mps, rss in rows:
        lines.append(f"| {name} | {seconds:.1f} | {mps:.3f} | "
                     + (f"{one / seconds:.2f}x" if one else "") + f" | {rss} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--planes", type=int, default=16)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--depth", type=int, default=DEFAULT_DEPTH)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--model", help="checkpoint to use (default: a random unet)")
    p.add_argument("--exact", action="store_true", help="fp32 instead of bf16 + channels_last")
    p.add_argument("--skip-in-memory", action="store_true")
    p.add_argument("--no-save", action="store_true", help="do not append to docs/scaling_results.md")
    args = p.parse_args(argv)
    before = load_average()
    print(f"load average before: {before}", flush=True)
    rows = run(args)
    text = table(rows, args, before, load_average())
    print()
    print(text)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        header = "" if RESULTS.exists() else (
            "# Chunked prediction throughput\n\nAppended by `python benchmarks/scaling.py`.\n\n")
        with open(RESULTS, "a") as f:
            f.write(header + text + "\n")
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
