"""Tuning run: does a smaller learning rate for the pre-trained encoder help with few annotations?

With one annotated image and a short fine-tuning budget, starting from the Barlow Twins encoder
scored below training from scratch in single `quality.py` runs. This runs the same protocol (same data split,
cached encoder, budget and seeds) with `FinetuneConfig.encoder_lr_scale` set to each given factor
(0 = frozen encoder), next to the scale-1 and from-scratch runs, and writes
docs/results_tuning.md (regenerating docs/results.md).

    python benchmarks/encoder_lr.py --datasets bbbc007 cho_3dt --level 1 --scales 0.1 0 --seeds 0 1
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from _report import DOCS, load_average, machine, stamp, table, write_section  # noqa: E402


def report(records: list[dict], args) -> str:
    settings = ["scratch"] + [f"x{s:g}" for s in sorted({r["scale"] for r in records if r["scale"] is not None},
                                                         reverse=True)]
    rows = []
    for ds_name in args.datasets:
        row = [ds_name]
        for setting in settings:
            dice = [r["dice"] for r in records if r["dataset"] == ds_name and r["setting"] == setting]
            row.append(quality.mean_std(dice))
        rows.append(row)
    header = ["dataset"] + ["from scratch" if s == "scratch" else f"encoder lr {s}" for s in settings]
    return "\n".join([
        "## Tuning: learning rate of the pre-trained encoder\n",
        f"{stamp()} · {machine()} · command: `{args.command_line}`\n",
        (f"`{args.variant}`, level {args.level} (annotated images of `quality.py`), fine-tuning budget "
         f"{args.finetune_seconds:g} s, the Barlow Twins encoder cached by `quality.py` "
         f"({args.pretrain_seconds:g} s). Test-set Dice, mean ± std over seeds {args.seeds}; "
         "`encoder lr x1` is the default, `x0` a frozen encoder.\n"),
        table(header, rows),
        "",
        "Records: [`data/tuning_encoder_lr.jsonl`](data/tuning_encoder_lr.jsonl).",
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["bbbc007", "cho_3dt"])
    p.add_argument("--variant", default="unet")
    p.add_argument("--level", default="1", choices=quality.LEVELS)
    p.add_argument("--scales", nargs="+", type=float, default=[0.1, 0.0],
                   help="encoder learning-rate factors to try besides 1 (default 0.1 0)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--finetune-seconds", type=float, default=90.0)
    p.add_argument("--pretrain-seconds", type=float, default=120.0, help="selects the cached encoder")
    p.add_argument("--data", default=str(quality.DEFAULT_DATA))
    p.add_argument("--records", default=str(DOCS / "data" / "tuning_encoder_lr.jsonl"))
    args = p.parse_args(argv)
    args.command_line = "python benchmarks/encoder_lr.py " + " ".join(sys.argv[1:] if argv is None else argv)
    qargs = quality.parse_args(["--full", "--pretrain-seconds", str(args.pretrain_seconds),
                                "--finetune-seconds", str(args.finetune_seconds)])
    path = Path(args.records)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["dataset"], r["setting"], r["seed"]) for r in records}
    settings = [("scratch", None), ("x1", 1.0)] + [(f"x{s:g}", s) for s in args.scales if s != 1.0]
    for ds_name in args.datasets:
        ds = quality.load_dataset(ds_name, Path(args.data))
        encoder, _ = quality.get_encoder(ds_name, ds, args.variant, qargs, Path(args.data))
        for seed in args.seeds:
            for setting, scale in settings:
                if (ds_name, setting, seed) in done:
                    continue
                rec = {"dataset": ds_name, "setting": setting, "scale": scale, "seed": seed,
                       "level": args.level, "variant": args.variant,
                       **quality.run_btunet(ds, args.level, args.variant, seed,
                                            None if scale is None else encoder, qargs,
                                            encoder_lr_scale=1.0 if scale is None else scale),
                       "load": load_average()}
                records.append(rec)
                with path.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                print(f"{ds_name:8s} {setting:8s} seed {seed}  Dice {rec['dice']:.3f}  epochs {rec['epochs']} "
                      f"(best {rec['best_epoch']})  {rec['train_s']:.0f} s  load {rec['load']}", flush=True)
                write_section("results_tuning.md", report(records, args))
    text = report(records, args)
    write_section("results_tuning.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
