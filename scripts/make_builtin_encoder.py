"""Write the built-in encoder (src/btunet/data/encoders/unet.safetensors) from a `btunet pretrain`
output: float16 weights plus provenance (data files, epochs, steps, wall time, CPU threads,
seed, final loss, btunet version, date, the command) in its metadata.

    python scripts/make_builtin_encoder.py /tmp/builtin/unet_bt.safetensors --threads 1 \\
        --command "btunet pretrain ... --epochs 900 --threads 1 --seed 0" --summary "..."

The shipped encoder was made with the command in its metadata (`btunet info builtin`).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from btunet.core.checkpoint import read_metadata  # noqa: E402
from btunet.train.builtin_encoder import BUILTIN_PATH, write_builtin  # noqa: E402


def short_name(path: str) -> str:
    """folder/file: enough to tell the data sets apart, nothing of the machine's layout."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def provenance(meta: dict, threads: int, command: str, summary: str) -> dict:
    cfg = meta["pretrain_config"]
    planes = meta["trained_on"]["planes"]
    epochs = int(meta["epochs"])
    steps = math.ceil(max(cfg["samples_per_epoch"], planes) / cfg["batch_size"]) * epochs
    return {"data": summary, "data_files": [short_name(f) for f in meta["trained_on"]["files"]], "planes": planes,
            "epochs": epochs, "planned_epochs": cfg["epochs"], "steps": steps,
            "wall_time_s": meta["seconds"], "cpu_threads": threads, "device": meta.get("device"),
            "seed": cfg["seed"], "final_loss": round(meta["loss_history"][-1], 2),
            "btunet_version": meta["versions"]["btunet"], "date": meta["date"], "command": command}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", help="encoder file written by `btunet pretrain`")
    p.add_argument("--threads", type=int, required=True, help="CPU threads the pre-training ran on")
    p.add_argument("--command", required=True, help="the `btunet pretrain` command that made it")
    p.add_argument("--summary", required=True, help="what the data are, in a sentence (shown to users)")
    p.add_argument("--out", default=str(BUILTIN_PATH))
    a = p.parse_args(argv)
    prov = provenance(read_metadata(a.source), a.threads, a.command, a.summary)
    path = write_builtin(a.source, prov, a.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {prov}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
