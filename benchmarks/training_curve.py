"""What the live preview shows while a fresh fine-tune runs: Dice at every epoch end, best vs end.

Per dataset, annotator style and seed, round 0 of the painting loop (``first_strokes`` on the
first training image, default engine settings) is trained once. At every epoch end the model is
scored on the painted image (what the live preview shows, against its true mask) and on the
first four test images, together with moving averages of the weights (``weight_average.py``)
updated after every step of the same run. Without held-out strokes (the simulated styles paint
fewer than the 4096 px validation needs) the training path does not depend on the average, so
each average here is exactly the model ``FinetuneConfig(weight_average=d)`` would preview and
return. The forest trained on the same strokes is scored beside it. Writes
docs/results_training_curve.md and docs/data/training_curve.jsonl.

    python benchmarks/training_curve.py                          # tuning sets x styles, seed 0
    python benchmarks/training_curve.py --datasets phc_psc --styles along --seeds 0 1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import DEFAULT_DATA, DOCS, load_average, machine, stamp, table, write_section  # noqa: E402
from interactive import ALL_DATASETS, DATASETS, ForestUser, test_dice  # noqa: E402
from quality import HELD_OUT, load_dataset  # noqa: E402

from btunet.train.simulate import STYLES, first_strokes  # noqa: E402

RECORDS = DOCS / "data" / "training_curve.jsonl"
DECAYS = (0.9, 0.97)
CURVE_TEST_IMAGES = 4  # test images scored at every epoch end (all of them at the end)
TOLERANCE = 0.01  # "never worse": the end within this of the best epoch


def scores(model, image, mask, tests) -> tuple[float, float, float]:
    """(painted-image Dice, its precision, mean Dice over ``tests``) of ``model``."""
    import btunet
    from btunet.labels.metrics import pixel_scores
    s = pixel_scores(btunet.predict(model, image, probabilities=False).labels, mask)
    dice = [pixel_scores(btunet.predict(model, im, probabilities=False).labels, m)["dice"] for _, im, m in tests]
    return round(float(s["dice"]), 4), round(float(s["precision"]), 4), round(float(np.mean(dice)), 4)


def run(ds_name: str, ds: dict, style: str, seed: int, settings: dict | None = None) -> dict:
    import btunet
    from btunet.train.weight_average import WeightAverage
    _, image, mask = ds["train"][0]
    strokes = first_strokes(mask, style, seed=seed)
    tests = ds["test"][:CURVE_TEST_IMAGES]
    averages: dict[float, WeightAverage] = {}
    curve = []

    def on_progress(p) -> None:
        for d in DECAYS:
            averages.setdefault(d, WeightAverage(p.model, d)).update(p.model)
        if p.epoch_end:
            was = p.model.training
            row = {"epoch": p.epoch, "elapsed_s": round(p.elapsed_s, 1), "last": scores(p.model, image, mask, tests)}
            for d, avg in averages.items():
                avg.model.metadata = p.model.metadata
                row[f"average_{d}"] = scores(avg.model, image, mask, tests)
            p.model.train(was)
            curve.append(row)

    t = time.perf_counter()
    cfg = btunet.FinetuneConfig(model="unet", seed=seed, **(settings or {}))
    net = btunet.finetune(image, strokes, cfg, on_progress=on_progress)
    seconds = time.perf_counter() - t
    forest = ForestUser(seed)
    _, forest_pred, _ = forest.train(image, strokes)
    from btunet.labels.metrics import pixel_scores
    rec = {"dataset": ds_name, "style": style, "seed": seed, "painted": int((strokes > 0).sum()),
           "validation": bool(net.metadata["trained_on"]["validation_pixels"]), "curve": curve,
           "seconds": round(seconds, 1), "load": load_average(),
           "forest": {"preview": round(float(pixel_scores(forest_pred, mask)["dice"]), 4),
                      "test": round(test_dice(forest.test(ds), ds), 4)},
           "end_test": {"last": round(test_dice([btunet.predict(net, im, probabilities=False).labels
                                                 for _, im, _ in ds["test"]], ds), 4)}}
    for d, avg in averages.items():
        avg.model.metadata = net.metadata
        rec["end_test"][f"average_{d}"] = round(test_dice([btunet.predict(avg.model, im, probabilities=False).labels
                                                           for _, im, _ in ds["test"]], ds), 4)
    print(json.dumps(rec), flush=True)
    return rec


# ------------------------------------------------------------------------------------- report
MODELS = ("last",) + tuple(f"average_{d}" for d in DECAYS)
LABELS = {"last": "last weights (today)", **{f"average_{d}": f"average, decay {d}" for d in DECAYS}}


def gap(rec: dict, model: str, k: int = 0) -> tuple[float, float]:
    """(end, best) of one curve column: k = 0 painted image, 2 test images."""
    values = [row[model][k] for row in rec["curve"]]
    return values[-1], max(values)


def settings_of(rec: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in rec.get("settings", {}).items()) or "default"


def summary(records: list[dict], args) -> str:
    held = [d for d in HELD_OUT if any(r["dataset"] == d for r in records)]
    lines = [
        "## The live preview during a fresh run\n",
        f"Generated by `benchmarks/training_curve.py` on {stamp()} ({machine()}); load average beside each run. "
        "Round 0 of the painting loop with default settings; the painted image's Dice (what the live preview "
        f"shows) and the mean Dice of {CURVE_TEST_IMAGES} test images at every epoch end, for the last weights "
        "and for moving averages of the weights of the same run (`FinetuneConfig.weight_average`). "
        f"*Never worse* = the end within {TOLERANCE} of the best epoch. "
        f"Defaults are tuned on {', '.join(DATASETS)}"
        + (f"; {', '.join(held)} are held out (reported, never tuned on)." if held else ".") + "\n",
    ]
    header = ["set", "style", "seed", "settings", "forest preview"] + [f"{LABELS[m]}: end / best" for m in MODELS] + [
        "test end (last / averages)", "s", "load"]
    rows = []
    for r in records:
        cells = [r["dataset"], r["style"], r["seed"], settings_of(r), f"{r['forest']['preview']:.3f}"]
        for m in MODELS:
            end, best = gap(r, m)
            mark = "" if end >= best - TOLERANCE else " ✗"
            cells.append(f"{end:.3f} / {best:.3f}{mark}")
        cells += [" / ".join(f"{r['end_test'][m]:.3f}" for m in MODELS), r["seconds"], r["load"]]
        rows.append(cells)
    lines.append(table(header, rows, "lllll" + "r" * len(MODELS) + "rrr"))
    for group in dict.fromkeys(settings_of(r) for r in records):
        recs = [r for r in records if settings_of(r) == group]
        lines.append(f"\nSettings {group}, {len(recs)} runs:")
        for m in MODELS:
            ok = sum(gap(r, m)[0] >= gap(r, m)[1] - TOLERANCE for r in recs)
            worst = min(gap(r, m)[0] - gap(r, m)[1] for r in recs)
            lines.append(f"- {LABELS[m]}: never worse in {ok} of {len(recs)}; mean end Dice of the painted image "
                         f"{np.mean([gap(r, m)[0] for r in recs]):.3f}, worst end − best {worst:+.3f}; mean "
                         f"test Dice at the end {np.mean([r['end_test'][m] for r in recs]):.3f}.")
    if records:
        prec = np.mean([r["curve"][-1]["last"][1] for r in records])
        lines.append(f"- Precision on the painted image at the end (last weights): mean {prec:.3f}. An end below "
                     "the best is mostly objects a pixel or two too wide: the edge the forest draws where no "
                     "stroke says where it is (benchmarks/interactive_notes.md).")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=ALL_DATASETS)
    ap.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--records", type=Path, default=RECORDS)
    ap.add_argument("--report", default="results_training_curve.md")
    ap.add_argument("--report-only", action="store_true", help="rewrite the page from the records")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 epochs of 5 steps: checks the script, measures nothing")
    ap.add_argument("--settings", type=json.loads, default={}, metavar="JSON",
                    help='engine settings other than the defaults, e.g. \'{"epochs": 6}\' (kept in the records)')
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    records = [json.loads(x) for x in args.records.read_text().splitlines()] if args.records.exists() else []
    done = {(r["dataset"], r["style"], r["seed"], json.dumps(r.get("settings", {}))) for r in records}
    if not args.report_only:
        args.records.parent.mkdir(parents=True, exist_ok=True)
        for ds_name in args.datasets:
            ds = load_dataset(ds_name, Path(args.data))
            for style in args.styles:
                for seed in args.seeds:
                    if (ds_name, style, seed, json.dumps(args.settings)) in done:
                        continue
                    settings = {"epochs": 2, "steps_per_epoch": 5} if args.quick else args.settings
                    rec = {**run(ds_name, ds, style, seed, settings), "settings": settings}
                    records.append(rec)
                    with args.records.open("a") as f:
                        f.write(json.dumps(rec) + "\n")
    write_section(args.report, summary(records, args))
    print(summary(records, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
