"""Does the dense Barlow Twins objective make a better encoder for segmentation than the global one?

Pre-trains the ``unet`` encoder twice with the same number of steps, seed and data (the built-in
encoder's: ``unlabelled/``, ``cells3d/nuclei.tif``, ``cho_3dt/stack.tif``; BBBC007 is never
seen): ``global`` (``dense_weight`` 0, the pooled bottleneck only) and ``dense``
(``dense_weight`` W, default 1: plus the loss on matched points of the 1/4-resolution skip).
Then fine-tunes from each, and from scratch, with ``benchmarks/pretraining.py``'s protocol
(1 annotated image, 4 epochs of 25 steps, 1 thread, seeds 0 1 2, BBBC007 and CHO).

Every pre-training and every fine-tune is appended to the records (docs/data/dense_pretraining.jsonl)
as soon as it ends; a rerun reuses the encoders in --work and skips done runs. The report is
docs/results_dense_pretraining.md (docs/results.md is regenerated); with other --records, it is
written beside them (RECORDS.md) and the docs are left alone.

    python benchmarks/dense_pretraining.py                      # 2 pre-trainings (~5 min each) + 18 fine-tunes
    python benchmarks/dense_pretraining.py --report-only
    python benchmarks/dense_pretraining.py --steps 3 --seeds 0 --datasets bbbc007 --epochs 1 \\
        --records /tmp/dense.jsonl --work /tmp/dense_enc          # smoke test
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from _report import DEFAULT_DATA, DOCS, load_average, machine, stamp, table, write_section  # noqa: E402
from pretraining import read_records, run_one  # noqa: E402

RECORDS = DOCS / "data" / "dense_pretraining.jsonl"
NOTES = Path(__file__).resolve().parent / "dense_pretraining_notes.md"
BATCH = 16  # the built-in encoder's batch and patch (PretrainConfig defaults)
#: about 5 minutes of pre-training on one thread of this machine (0.45-0.55 s a step global,
#: ~20 % more dense, at load ~2)
DEFAULT_STEPS = 600


def pretraining_data(data: Path) -> list[Path]:
    """The files of the shipped built-in encoder (scripts/make_builtin_encoder.py, `btunet info builtin`)."""
    return [data / "unlabelled", data / "cells3d" / "nuclei.tif", data / "cho_3dt" / "stack.tif"]


def epochs_for(steps: int) -> int:
    """Epochs that split ``steps`` evenly with at least 16 steps each (256 samples: one pass over
    the 225 planes), so ``samples_per_epoch`` fixes the steps exactly; fewer steps: one epoch of 15."""
    return max(e for e in range(1, max(1, steps // 16) + 1) if steps % e == 0)


def append(path: Path, rec: dict) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(rec) + "\n")


def pretrained(name: str, weight: float, args, records: list[dict]):
    """The encoder of one objective: from --work if it was made with these settings, else trained now."""
    import btunet
    from btunet.train.pretrain import PretrainedEncoder
    path = Path(args.work) / f"{name}_w{weight:g}_{args.steps}steps_seed{args.pretrain_seed}.safetensors"
    if path.exists():
        return PretrainedEncoder.load(path)
    epochs = epochs_for(args.steps)
    cfg = btunet.PretrainConfig(model="unet", epochs=epochs, batch_size=BATCH,
                                samples_per_epoch=args.steps // epochs * BATCH, dense_weight=weight,
                                seed=args.pretrain_seed)
    enc = btunet.pretrain([str(p) for p in pretraining_data(Path(args.data))], cfg)
    planes = enc.metadata["trained_on"]["planes"]
    steps = -(-max(cfg.samples_per_epoch, planes) // BATCH) * epochs
    path.parent.mkdir(parents=True, exist_ok=True)
    enc.save(path)
    rec = {"part": "pretrain", "encoder": name, "dense_weight": weight, "steps": steps,
           "pretrain_steps": args.steps, "seed": args.pretrain_seed, "seconds": enc.metadata["seconds"],
           "s_per_step": round(enc.metadata["seconds"] / steps, 3), "planes": planes,
           "final_loss": round(enc.metadata["loss_history"][-1], 2), "threads": args.threads,
           "load": load_average(), "date": stamp()}
    records.append(rec)
    append(args.records, rec)
    print(f"pretrain {name:7s} {steps} steps  {rec['seconds']:.0f} s ({rec['s_per_step']} s/step)  "
          f"final loss {rec['final_loss']}  load {rec['load']}", flush=True)
    return enc


def run(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    records = read_records(args.records)
    encoders = {"global": 0.0, "dense": args.dense_weight}
    loaded = {name: pretrained(name, w, args, records) for name, w in encoders.items()}
    done = {(r["dataset"], r["encoder"], r["dense_weight"], r["pretrain_steps"], r["seed"], r["ft_epochs"])
            for r in records if r["part"] == "finetune"}
    for ds_name in args.datasets:
        ds = quality.load_dataset(ds_name, Path(args.data))
        for seed in args.seeds:
            for name, enc in [("scratch", None)] + list(loaded.items()):
                weight = encoders.get(name)
                steps = None if enc is None else args.steps
                key = (ds_name, name, weight, steps, seed, args.epochs)
                if key in done:
                    continue
                rec = {"part": "finetune", "dataset": ds_name, "encoder": name, "dense_weight": weight,
                       "pretrain_steps": steps, "seed": seed, "ft_epochs": args.epochs, "threads": args.threads,
                       "images": 1, **run_one(ds, seed, enc, args.epochs, "default"),
                       "load": load_average(), "date": stamp()}
                records.append(rec)
                append(args.records, rec)
                print(f"{ds_name:8s} {name:8s} seed {seed}  Dice {rec['dice']:.3f}  {rec['train_s']:.0f} s  "
                      f"load {rec['load']}", flush=True)


# ------------------------------------------------------------------------------------ report
def report(records: list[dict], steps: int, weight: float) -> str:
    pre = {r["encoder"]: r for r in records if r["part"] == "pretrain" and r["pretrain_steps"] == steps
           and r["dense_weight"] == (0.0 if r["encoder"] == "global" else weight)}
    ft = [r for r in records if r["part"] == "finetune" and (r["encoder"] == "scratch" or r["encoder"] in pre)
          and (r["pretrain_steps"] in (None, steps)) and r["dense_weight"] in (None, 0.0, weight)]
    lines = ["# Dense against global Barlow Twins pre-training\n",
             (f"Generated by `benchmarks/dense_pretraining.py` ({stamp()}, {machine()}, 1-min load at the end "
              f"{load_average()}; records in [docs/data/dense_pretraining.jsonl](data/dense_pretraining.jsonl), "
              "each with the load when it finished).\n"),
             (f"The `unet` encoder pre-trained for {next(iter(pre.values()))['steps'] if pre else steps} steps "
              f"(batch {BATCH} × 96², seed 0) on the "
              "built-in encoder's data (BBBC007 never seen) with the pooled objective alone (`global`, "
              f"`dense_weight` 0) or plus the dense loss on 7 × 7 matched points of the 1/4-resolution skip "
              f"(`dense`, `dense_weight` {weight:g}).\n")]
    if pre:
        rows = [[f"`{n}`", f"{r['dense_weight']:g}", r["steps"], f"{r['seconds']:.0f}", f"{r['s_per_step']:.3f}",
                 r["final_loss"], r["load"]] for n, r in pre.items()]
        lines += [table(["objective", "dense_weight", "steps", "seconds", "s / step", "final loss", "load at end"],
                        rows), ""]
    if not ft:
        return "\n".join(lines)
    datasets = list(dict.fromkeys(r["dataset"] for r in ft))
    names = ["scratch"] + [n for n in ("global", "dense") if n in pre]
    header = ["from scratch" if n == "scratch" else f"`{n}`" for n in names]

    def cell(**m):
        return quality.mean_std([r["dice"] for r in ft if all(r[k] == v for k, v in m.items())])
    lines += [(f"Fine-tuning: one annotated image, `unet`, {ft[0]['ft_epochs']} epochs of 25 steps on "
               f"{ft[0]['threads']} thread(s), the engine's default encoder start (`benchmarks/pretraining.py`'s "
               f"protocol); test Dice, mean ± std over seeds {sorted({r['seed'] for r in ft})}.\n"),
              table(["dataset"] + header, [[ds] + [cell(dataset=ds, encoder=n) for n in names] for ds in datasets]),
              "",
              ("Per seed (a seed draws the same patches and decoder weights whatever the encoder, so a row is "
               "paired); fine-tuning seconds and load in brackets:\n")]
    rows = []
    for ds in datasets:
        for seed in sorted({r["seed"] for r in ft if r["dataset"] == ds}):
            row = [ds, seed]
            for n in names:
                r = next((r for r in ft if r["dataset"] == ds and r["encoder"] == n and r["seed"] == seed), None)
                row.append("—" if r is None else f"{r['dice']:.3f} ({r['train_s']:.0f} s, {r['load']})")
            rows.append(row)
    lines += [table(["dataset", "seed"] + header, rows, "lr" + "r" * len(names)), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"pre-training steps of each objective (default {DEFAULT_STEPS}, ~5 minutes each on one "
                        "thread; at least one pass over the 225 planes: 15 steps)")
    p.add_argument("--dense-weight", type=float, default=1.0, help="dense_weight of the dense objective (default 1)")
    p.add_argument("--pretrain-seed", type=int, default=0, help="seed of both pre-trainings (default 0)")
    p.add_argument("--datasets", nargs="+", default=["bbbc007", "cho_3dt"], choices=("bbbc007", "cells3d", "cho_3dt"),
                   help="fine-tuning data sets (default bbbc007 cho_3dt)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="fine-tuning seeds")
    p.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs of 25 steps (default 4)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    p.add_argument("--work", default="/tmp/btunet_dense_pretraining", help="where the encoders are kept")
    p.add_argument("--records", type=Path, default=RECORDS,
                   help="JSON-lines records (appended); other than the default, the report goes beside them "
                        "(RECORDS.md) instead of docs/")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the records")
    args = p.parse_args(argv)
    args.records.parent.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run(args)
    text = report(read_records(args.records), args.steps, args.dense_weight)
    if NOTES.exists():
        text += "\n" + NOTES.read_text()
    if args.records.resolve() == RECORDS.resolve():
        write_section("results_dense_pretraining.md", text)
    else:
        args.records.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
