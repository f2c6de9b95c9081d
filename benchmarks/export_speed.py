"""CPU speed of the exported network in ONNX Runtime and TorchScript against `btunet.predict`.

One 1024 x 1024 grayscale image (a mosaic of BBBC007 sample images), a unet of the default
width, 1 and 2 threads. Each row is the best of ``--repeat`` runs of the whole job: percentile
normalisation, the network, the 0.5 threshold. `btunet.predict` runs its bf16 fast path
(channels_last) and fp32; the exported files run fp32 with BatchNorm folded, as in the package.
Writes docs/results_export.md.

    python benchmarks/export_speed.py                      # unet, 1 and 2 threads (~2 minutes)
    python benchmarks/export_speed.py --models unet rca_iunet --threads 1
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _report import DOCS, load_average, stamp, table  # noqa: E402


def best_of(fn, repeat: int) -> tuple[float, object]:
    result = fn()  # warm-up: allocations, TorchScript profiling, ORT arena
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def mosaic(size: int = 1024) -> np.ndarray:
    import tifffile

    from btunet.io.sample import sample_paths
    tiles = [tifffile.imread(p)[:size // 2, :size // 2] for p in sample_paths()[0][:4]]
    return np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])[:size, :size]


def model_for(name: str):
    """A default-width variant whose BatchNorm statistics come from real pixels (speed does not
    depend on the weights; realistic statistics keep the probabilities comparable)."""
    from btunet import create_model
    from btunet.exporting.bioimageio_package import sample_tensor, scale_range
    torch.manual_seed(0)
    model = create_model(name, in_channels=1)
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(scale_range(sample_tensor(1, 256))))
    return model.eval()


def measure(name: str, threads: int, repeat: int, image: np.ndarray, folder: Path) -> list[list]:
    import onnxruntime

    from btunet import predict
    from btunet.exporting.bioimageio_package import scale_range
    from btunet.exporting.export import write_onnx, write_torchscript
    torch.set_num_threads(threads)
    model = model_for(name)
    onnx_file, script_file = folder / f"{name}.onnx", folder / f"{name}.pt"
    if not onnx_file.exists():
        write_onnx(model, onnx_file)
        write_torchscript(model, script_file)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    script = torch.jit.load(str(script_file))
    raw = image[None, None].astype(np.float32)

    def run_onnx():
        prob = session.run(None, {"raw": scale_range(raw)})[0][0, 0]
        return prob, prob > 0.5

    def run_script():
        with torch.no_grad():
            prob = script(torch.from_numpy(scale_range(raw))).numpy()[0, 0]
        return prob, prob > 0.5

    def run_btunet(fast: bool):
        result = predict(model, image, device="cpu", fast=fast)
        return result.probabilities, result.labels.astype(bool)

    rows = []
    reference = None
    for label, fn in (("btunet.predict, fp32", lambda: run_btunet(False)),
                      ("btunet.predict, bf16 fast path", lambda: run_btunet(True)),
                      ("ONNX Runtime, fp32", run_onnx), ("TorchScript, fp32", run_script)):
        seconds, (prob, mask) = best_of(fn, repeat)
        if reference is None:
            reference = prob, mask
        rows.append([name, threads, label, f"{seconds:.2f}", f"{np.abs(prob - reference[0]).max():.1e}",
                     f"{(mask != reference[1]).mean() * 100:.3f}"])
        print(" | ".join(str(c) for c in rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["unet"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    a = parser.parse_args()
    image = mosaic()
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in a.models:
            for threads in a.threads:
                rows += measure(name, threads, a.repeat, image, Path(folder))
    import onnxruntime
    header = ["model", "threads", "path", "seconds", "largest probability difference", "labels differing (%)"]
    text = f"""## Exported models: CPU speed

{stamp()}, `benchmarks/export_speed.py`: one 1024 x 1024 image, best of {a.repeat} runs, each
the whole job (percentile normalisation, network, threshold). torch {torch.__version__},
ONNX Runtime {onnxruntime.__version__}. 1-minute load average {load_before} before and
{load_average()} after the run on {__import__('os').cpu_count()} logical CPUs: other jobs shared
the machine, so absolute times are upper bounds; the rows of one run are comparable.

{table(header, rows, "lrlrrr")}

`btunet.predict` pads to a multiple of 16 by reflection and predicts the plane as one tile (it
is under the 1024-px tile size); the exported networks get the same 1024 x 1024 input. The last
two columns compare with the first row.
"""
    out = DOCS / "results_export.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
