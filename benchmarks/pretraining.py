"""Does Barlow Twins pre-training pay off? Fine-tuning from pre-trained encoders against from scratch.

Two parts, one record file (docs/data/pretraining.jsonl), one report (docs/results_pretraining.md,
with benchmarks/pretraining_notes.md copied in; docs/results.md is regenerated):

* ``start``: how a fine-tune starts from an encoder (``FinetuneConfig.encoder_refit_bn``,
  ``encoder_warmup``; see src/btunet/train/encoder_start.py), on short
  pre-trainings, against from scratch, on BBBC007 at one annotated image;
* ``builtin``: the encoder shipped with the package (``encoder="builtin"``) against from scratch
  and against a user's own short pre-training, on BBBC007 (never seen in pre-training) and on
  ``cells3d`` / CHO (seen, unlabelled).

Fine-tuning is a fixed number of epochs on one thread (a time budget would measure the machine's
load, which other jobs share here). Every finished run is appended at once; a rerun skips done runs.

    python benchmarks/pretraining.py start --encoders 15ep=/tmp/enc_15.safetensors --seeds 0 1 2
    python benchmarks/pretraining.py builtin --encoders builtin user15=/tmp/enc_15.safetensors
    python benchmarks/pretraining.py report
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from _report import DEFAULT_DATA, DOCS, ROOT, load_average, machine, stamp, table, write_section  # noqa: E402
from headlines import paired_diffs  # noqa: E402

from btunet.core.config import DENSE_EPOCHS  # noqa: E402  (the engine's length for dense masks)

RECORDS = DOCS / "data" / "pretraining.jsonl"
#: every column of the 1-image recipe rerun together on one version of the code (seeds paired)
SAME_CODE = DOCS / "data" / "pretraining_same_code.jsonl"
NOTES = ROOT / "benchmarks" / "pretraining_notes.md"
#: how the fine-tune starts from an encoder: FinetuneConfig fields of each setting (explicit, so a
#: record means the same start whatever the engine's defaults; "lr3" is the engine's start now)
SETTINGS = {
    "keep": {"encoder_refit_bn": False, "encoder_warmup": 0.0, "encoder_lr_scale": 1.0},
    "refit": {"encoder_refit_bn": True, "encoder_warmup": 0.0, "encoder_lr_scale": 1.0},
    "refit+warmup": {"encoder_refit_bn": True, "encoder_warmup": 2.0, "encoder_lr_scale": 1.0},
    "lr3": {"encoder_refit_bn": True, "encoder_lr_scale": 3.0},
    "rescale": {"encoder_refit_bn": True, "encoder_rescale": True, "encoder_lr_scale": 1.0},
    "rescale+lr3": {"encoder_refit_bn": True, "encoder_rescale": True, "encoder_lr_scale": 3.0},
    "default": {"encoder_lr_scale": 1.0},  # the engine's start before the encoder's lr became x3
}
SETTING_TEXT = {
    "keep": "as saved (BN statistics of pre-training)",
    "refit": "BN statistics re-estimated",
    "refit+warmup": "re-estimated + encoder lr warm-up (2 epochs)",
    "lr3": "encoder lr x3 (the engine's start)",
    "rescale": "re-estimated + weights scaled to a fresh init's norms",
    "rescale+lr3": "rescaled + encoder lr x3",
    "default": "encoder lr x1",
}


def read_records(path: Path = RECORDS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def encoder_summary(enc) -> dict:
    """What the record keeps of an encoder: how long and on what it was pre-trained."""
    m = enc.metadata
    prov = m.get("provenance") or {}
    cfg = m.get("pretrain_config") or {}
    steps = prov.get("steps")
    if steps is None and cfg:
        per_epoch = -(-max(cfg.get("samples_per_epoch", 0), (m.get("trained_on") or {}).get("planes", 0))
                      // cfg.get("batch_size", 1))
        steps = per_epoch * int(m.get("epochs") or 0)
    return {"epochs": m.get("epochs"), "steps": steps, "seconds": m.get("seconds"),
            "files": [Path(f).name for f in (m.get("trained_on") or {}).get("files", [])],
            "final_loss": (m.get("loss_history") or [None])[-1]}


def run_one(ds: dict, seed: int, encoder, epochs: int, setting: str, n_images: int = 1) -> dict:
    import btunet
    images, labels, mode = quality.annotations(ds, str(n_images))
    cfg = btunet.FinetuneConfig(model="unet", mask_mode=mode, epochs=epochs, seed=seed, **SETTINGS[setting])
    t = time.perf_counter()
    model = btunet.finetune(images, labels, cfg, encoder=encoder)
    train_s = time.perf_counter() - t
    scores, pred_s = quality.score_model(model, ds)
    return {**scores, "train_s": round(train_s, 1), "predict_s": round(pred_s, 1),
            "epochs": model.metadata["epochs"], "best_epoch": model.metadata["best_epoch"]}


def run(args) -> None:
    import torch

    from btunet.train.pretrain import as_encoder
    torch.set_num_threads(args.threads)
    records = read_records(args.records)
    done = {(r["part"], r["dataset"], r["encoder"], r["setting"], r["seed"], r["ft_epochs"], r.get("images", 1))
            for r in records}
    encoders = {} if args.no_scratch else {"scratch": None}
    for spec in args.encoders:
        name, _, path = spec.partition("=")
        encoders[name] = as_encoder(path or name)  # "builtin" names the shipped file
    settings = args.settings if args.part in ("start", "recipe") else ["default"]
    for ds_name in args.datasets:
        ds = quality.load_dataset(ds_name, Path(args.data))
        for seed in args.seeds:
            for name, enc in encoders.items():
                for setting in (["-"] if enc is None else settings):
                    key = (args.part, ds_name, name, setting, seed, args.epochs, args.images)
                    if key in done:
                        continue
                    rec = {"part": args.part, "dataset": ds_name, "encoder": name, "setting": setting,
                           "seed": seed, "ft_epochs": args.epochs, "threads": args.threads, "images": args.images,
                           "encoder_info": None if enc is None else encoder_summary(enc),
                           **run_one(ds, seed, enc, args.epochs, setting if enc is not None else "default",
                                      args.images),
                           "load": load_average(), "date": stamp()}
                    records.append(rec)
                    with Path(args.records).open("a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                    print(f"{ds_name:8s} {name:10s} {setting:14s} seed {seed}  Dice {rec['dice']:.3f}  "
                          f"{rec['train_s']:.0f} s  load {rec['load']}", flush=True)
                    if Path(args.records).resolve() != RECORDS.resolve():
                        continue  # another record file: `report` puts it on the page
                    try:
                        report(read_records(args.records))  # with what parallel runs appended
                    except OSError as exc:  # another run is rewriting the report: the next one will
                        print(f"report not written ({exc})", flush=True)


# ------------------------------------------------------------------------------------ report
def cell(records: list[dict], **match) -> str:
    d = [r["dice"] for r in records if all(r.get(k) == v for k, v in match.items())]
    return quality.mean_std(d)


def encoder_line(records: list[dict], name: str) -> str:
    info = next((r["encoder_info"] for r in records if r["encoder"] == name and r["encoder_info"]), None)
    if info is None:
        return ""
    files = ", ".join(info["files"]) if len(info["files"]) <= 4 else f"{len(info['files'])} files"
    loss = f", final loss {info['final_loss']:.1f}" if info.get("final_loss") is not None else ""
    return (f"* `{name}`: {info['epochs']} epochs, {info['steps']} steps, {info['seconds']} s on this machine"
            f"{loss}; data: {files}")


def start_section(records: list[dict]) -> str:
    recs = [r for r in records if r["part"] == "start" and r["dataset"] == "bbbc007" and r.get("images", 1) == 1]
    if not recs:
        return ""
    settings = [s for s in SETTINGS if any(r["setting"] == s for r in recs)]
    encoders = [n for n in dict.fromkeys(r["encoder"] for r in recs) if n != "scratch"]
    lines = ["## How a fine-tune starts from a pre-trained encoder\n",
             ("BBBC007, one annotated image (the first file), tested on the other 10 files; "
              f"`unet`, {recs[0]['ft_epochs']} fine-tuning epochs of 25 steps on {recs[0]['threads']} thread(s); "
              "test Dice, mean ± std over seeds "
              f"{sorted({r['seed'] for r in recs})}. From scratch: **{cell(recs, encoder='scratch')}**.\n")]
    rows = [[f"`{n}`"] + [cell(recs, encoder=n, setting=s) for s in settings] for n in encoders]
    lines += [table(["encoder"] + [SETTING_TEXT[s] for s in settings], rows), ""]
    lines += [encoder_line(recs, n) for n in encoders] + [""]
    return "\n".join(lines)


def fixes_section(records: list[dict], n_images: int = 2) -> str:
    """Ways of starting a fine-tune from long pre-trainings, per dataset, beside from scratch and
    the encoder lr x1 start of the "builtin" part."""
    recs = [r for r in records if r["part"] == "start" and r["encoder"] != "scratch" and r.get("images", 1) == n_images]
    if not recs:
        return ""
    epochs = recs[0]["ft_epochs"]
    same = [r for r in records if r.get("images", 1) == n_images and r["ft_epochs"] == epochs]
    settings = [s for s in SETTINGS if any(r["setting"] == s for r in recs)]
    rows = [[ds, f"`{enc}`", cell(same, dataset=ds, encoder="scratch"),
             cell(same, part="builtin", dataset=ds, encoder=enc)]
            + [cell(recs, dataset=ds, encoder=enc, setting=s) for s in settings]
            for ds in dict.fromkeys(r["dataset"] for r in recs)
            for enc in dict.fromkeys(r["encoder"] for r in recs if r["dataset"] == ds)]
    return "\n".join([
        f"## Starting from a long pre-training: what was tried ({n_images} annotated images)\n",
        (f"Same protocol as the tables below ({epochs} fine-tuning epochs, seeds "
         f"{sorted({r['seed'] for r in recs})}); each column a way of starting; "
         "the BN statistics are re-estimated in all.\n"),
        table(["dataset", "encoder", "from scratch", "encoder lr x1"] + [SETTING_TEXT[s] for s in settings], rows,
              "ll" + "r" * (2 + len(settings))), ""])


def seeds_cell(records: list[dict], ds: str, encoder: str, setting: str) -> str:
    """Mean ± std of a column, naming its seeds when it has fewer than the dataset's runs."""
    seeds = sorted({r["seed"] for r in records if r["dataset"] == ds and r["encoder"] == encoder
                    and r["setting"] == setting})
    every = {r["seed"] for r in records if r["dataset"] == ds}
    text = cell(records, dataset=ds, encoder=encoder, setting=setting)
    return text if set(seeds) == every or len(seeds) < 2 else f"{text} (seeds {', '.join(map(str, seeds))})"


def paired_gain(records: list[dict], ds: str, encoder: str, setting: str) -> str:
    """The column minus from scratch, seed by seed, on the seeds both have."""
    diffs = paired_diffs(records, ds, encoder, setting)
    if not diffs:
        return "—"
    return f"{np.mean(diffs):+.3f} ± {np.std(diffs):.3f} ({len(diffs)} seeds)"


def recipe_section(records: list[dict], title: str = "The built-in encoder's recipe against from scratch, same run",
                   source: str = "") -> str:
    """The shipped recipe against from scratch, run together (part "recipe"), per annotated-image count."""
    recs = [r for r in records if r["part"] == "recipe"]
    out = []
    for n, epochs in sorted({(r.get("images", 1), r["ft_epochs"]) for r in recs}):
        rs = [r for r in recs if r.get("images", 1) == n and r["ft_epochs"] == epochs]
        columns = list(dict.fromkeys((r["encoder"], r["setting"]) for r in rs))
        if len(columns) < 2:
            continue  # from scratch alone: the headroom table shows it
        datasets = ordered(r["dataset"] for r in rs)

        def name(e, st):
            return "from scratch" if e == "scratch" else f"`{e}`, {SETTING_TEXT[st]}"
        rows = [[ds] + [seeds_cell(rs, ds, e, st) for e, st in columns] for ds in datasets]
        gains = [[ds] + [paired_gain(rs, ds, e, st) for e, st in columns[1:]] for ds in datasets]
        seeds = [[ds, seed] + [cell(rs, dataset=ds, encoder=e, setting=st, seed=seed).replace(" (1 seed)", "")
                               for e, st in columns]
                 for ds in datasets for seed in sorted({r["seed"] for r in rs if r["dataset"] == ds})]
        out += [f"## {title}: {n} annotated image(s), {epochs} fine-tuning epochs\n",
                (f"{source}`unet`, {epochs} fine-tuning epochs of 25 steps on {rs[0]['threads']} thread(s)"
                 f"{' (the default for dense masks, with early stopping)' if epochs == DENSE_EPOCHS else ''}; "
                 f"run {run_dates(rs)}; test Dice, mean ± std over seeds, then per seed (paired).\n"),
                table(["dataset"] + [name(*c) for c in columns], rows), "",
                "Minus from scratch on the same seeds (paired), mean ± std of the differences:\n",
                table(["dataset"] + [name(*c) for c in columns[1:]], gains), "",
                table(["dataset", "seed"] + [name(*c) for c in columns], seeds, "lr" + "r" * len(columns)), ""]
        out += [encoder_line(rs, e) for e in dict.fromkeys(e for e, _ in columns) if e != "scratch"] + [""]
    return "\n".join(out)


def ordered(datasets) -> list[str]:
    """Datasets in the page's order: the unseen BBBC007 first."""
    order = ("bbbc007", "cho_3dt", "cells3d")
    return sorted(set(datasets), key=lambda d: (order.index(d) if d in order else len(order), d))


def run_dates(records: list[dict]) -> str:
    """When a table's runs finished and under what load (the records carry both)."""
    dates = sorted(r["date"] for r in records if r.get("date"))
    loads = sorted(float(r["load"]) for r in records if r.get("load"))
    if not dates:
        return "on unrecorded dates"
    same_day = dates[0][:10] == dates[-1][:10]
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1][11:] if same_day else dates[-1]}"
    return f"{when}, 1-min load {loads[0]:.1f}-{loads[-1]:.1f}" if loads else when


def headroom_section(records: list[dict]) -> str:
    """How far from scratch at one image is from what more annotation reaches: the most any start can add."""
    recs = [r for r in records if r["part"] == "recipe"]
    full = [r for r in recs if r["encoder"] == "scratch" and r.get("images", 1) > 2]
    if not full:
        return ""
    columns = [(1, e) for e in sorted({r["ft_epochs"] for r in recs if r.get("images", 1) == 1})]
    columns += sorted({(r["images"], r["ft_epochs"]) for r in full})
    top = columns[-1]
    rows = []
    for ds in ordered(r["dataset"] for r in full):
        mean = {c: [r["dice"] for r in recs if r["encoder"] == "scratch" and r["dataset"] == ds
                    and (r.get("images", 1), r["ft_epochs"]) == c] for c in columns}
        room = [f"{np.mean(mean[top]) - np.mean(mean[c]):+.3f}" if mean[c] and mean[top] else "—"
                for c in columns[:-1]]
        rows.append([ds] + [quality.mean_std(mean[c]) if mean[c] else "—" for c in columns] + room)
    head = [f"{n} image{'s' if n > 1 else ''}, {e} epochs" for n, e in columns]
    return "\n".join([
        "## Headroom: from scratch at one image against more annotation\n",
        (f"From scratch only, same records and test images. The last columns are what {head[-1]} adds over "
         "one image: the most a better start (a pre-trained encoder) could add to a fine-tune on one image, "
         "unless it did better than more masks.\n"),
        table(["dataset"] + [f"from scratch, {h}" for h in head] + [f"room over {h}" for h in head[:-1]], rows),
        ""])


def builtin_section(records: list[dict]) -> str:
    counts = sorted({r.get("images", 1) for r in records if r["part"] == "builtin"})
    return "\n".join(builtin_table([r for r in records if r.get("images", 1) == n], n) for n in counts)


def builtin_table(records: list[dict], n_images: int) -> str:
    recs = [r for r in records if r["part"] == "builtin"]
    if not recs:
        return ""
    datasets = list(dict.fromkeys(r["dataset"] for r in recs))
    # from scratch does not depend on the encoder settings: runs of the other part count too
    # (on this part's seeds, so the columns stay paired)
    seeds = {r["seed"] for r in recs}
    recs += [r for r in records if r["part"] != "builtin" and r["encoder"] == "scratch" and r["seed"] in seeds
             and r["dataset"] in datasets and r["ft_epochs"] == recs[0]["ft_epochs"]]
    encoders = ["scratch"] + [n for n in dict.fromkeys(r["encoder"] for r in recs) if n != "scratch"]
    seen = {"bbbc007": "no", "cells3d": "yes (unlabelled)", "cho_3dt": "yes (unlabelled)"}
    rows = [[ds, seen.get(ds, "?")] + [cell(recs, dataset=ds, encoder=n) for n in encoders] for ds in datasets]
    header = ["dataset", "in the built-in encoder's data"] + [
        "from scratch" if n == "scratch" else f"`{n}`" for n in encoders]
    count = "One annotated image" if n_images == 1 else f"{n_images} annotated images"
    lines = [(f"## The built-in encoder against from scratch and a short pre-training of one's own: "
              f"{count.lower()}\n"),
             (f"{count} per dataset (the first of `quality.py`'s training pool), "
              f"`unet`, {recs[0]['ft_epochs']} fine-tuning epochs of 25 steps on {recs[0]['threads']} thread(s), "
              "BN statistics re-estimated, encoder lr x1 (the engine's default start when these ran); test Dice, "
              "mean ± std over seeds "
              f"{sorted({r['seed'] for r in recs})}.\n"),
             table(header, rows, "ll" + "r" * len(encoders)), ""]
    lines += [encoder_line(recs, n) for n in encoders if n != "scratch"] + [""]
    lines += [("Per seed (a seed draws the same patches and decoder weights whatever the encoder, so the "
               "columns of a row are paired):\n")]
    rows = []
    for ds in datasets:
        for seed in sorted({r["seed"] for r in recs if r["dataset"] == ds}):
            rows.append([ds, seed] + [cell(recs, dataset=ds, encoder=n, seed=seed).replace(" (1 seed)", "")
                                      for n in encoders])
    lines += [table(["dataset", "seed"] + header[2:], rows, "lr" + "r" * len(encoders)), ""]
    return "\n".join(lines)


def report(records: list[dict]) -> str:
    parts = ["# Pre-training: when it pays off\n",
             (f"Generated by `benchmarks/pretraining.py` ({stamp()}, {machine()}, 1-min load at the end "
              f"{load_average()}; records in [docs/data/pretraining.jsonl](data/pretraining.jsonl), "
              "each with the load when it finished).\n"),
             recipe_section(read_records(SAME_CODE), "Every column on one version of the code",
                            "Records in [docs/data/pretraining_same_code.jsonl](data/pretraining_same_code.jsonl), "
                            "every column of a table run on one version of the code, so every seed is paired; the "
                            "other tables mix runs made before and after changes to the fine-tune, which move a "
                            "from-scratch run of the same seed by up to 0.06. "),
             headroom_section(read_records(SAME_CODE)),
             recipe_section(records), start_section(records), fixes_section(records), builtin_section(records)]
    if NOTES.exists():
        parts.append(NOTES.read_text())
    text = "\n".join(p for p in parts if p)
    write_section("results_pretraining.md", text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=("start", "builtin", "recipe", "report"),
                   help="start: ways of starting on BBBC007; builtin: encoders at the default start; "
                        "recipe: encoders x settings with from scratch in the same run, per --images")
    p.add_argument("--encoders", nargs="*", default=[],
                   help="NAME=FILE of each encoder (NAME alone: 'builtin', the packaged one)")
    p.add_argument("--settings", nargs="+", default=["keep", "refit"], choices=list(SETTINGS))
    p.add_argument("--datasets", nargs="+", default=["bbbc007"], choices=("bbbc007", "cells3d", "cho_3dt"))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs (25 steps each)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--images", type=int, default=1, choices=(1, 2, 4),
                   help="annotated images (dense masks; 4: the headroom, from scratch only)")
    p.add_argument("--no-scratch", action="store_true",
                   help="skip the from-scratch runs (the other part has them: same protocol)")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--records", type=Path, default=RECORDS)
    args = p.parse_args(argv)
    args.records.parent.mkdir(parents=True, exist_ok=True)
    if args.part != "report":
        run(args)
    print(report(read_records(RECORDS)))  # the page reads the same-code file itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
