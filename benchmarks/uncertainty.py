"""Which uncertainty map points at the errors: ROC AUC of candidate maps against error pixels.

Per dataset, annotator style and seed, round 0 of the painting loop (``first_strokes`` on the
first training image; style ``sample``: the plugin's sample image with its painted-looking
annotation) is fine-tuned once with default settings. The same model then gives every candidate
map of the painted image and of test images, and each map is scored by ROC AUC against the
error pixels (prediction != truth): 0.5 = no better than chance, 1 = every error above every
correct pixel. Also reported: the share of error pixels among the 5 % most uncertain pixels
(where a user looks first). Writes docs/results_uncertainty.md and docs/data/uncertainty.jsonl.

    python benchmarks/uncertainty.py                          # tuning sets x styles, seed 0
    python benchmarks/uncertainty.py --datasets bbbc007 --styles sample --seeds 0 1
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
from _uncertainty_summary import (  # noqa: E402
    CANDIDATES,
    CHOSEN,
    EARLY_EPOCH,
    SAMPLE_STYLE,
    SMOOTH_SIGMA,
    WHERE,
    auc,
    choice,
)
from interactive import DATASETS, load_dataset  # noqa: E402

from btunet.train.simulate import STYLES, first_strokes  # noqa: E402

RECORDS = DOCS / "data" / "uncertainty.jsonl"
NOTES = Path(__file__).with_name("uncertainty_notes.md")
TEST_IMAGES = 8  # test images per run, spread over the test set
SNAPSHOTS = (0.5, 0.75, 1.0)  # the snapshot ensemble: epoch ends at these fractions of the run
TOP = 0.05  # the share of most uncertain pixels a user looks at first
FAR_PX = 3  # errors farther than this from the predicted edge are whole wrong objects
MIN_FAR = 20  # pixels: fewer such errors give no AUC


def edge_closeness(pred: np.ndarray) -> np.ndarray:
    """Minus the distance to the nearest pixel of the other side of the predicted mask."""
    from scipy import ndimage as ndi
    if pred.all() or not pred.any():
        return np.zeros(pred.shape, np.float32)
    return -(ndi.distance_transform_edt(pred) + ndi.distance_transform_edt(~pred))


def maps_of(net, snapshots: list, pixels: np.ndarray, forest: np.ndarray, threshold: float) -> tuple[dict, np.ndarray]:
    """(candidate maps, predicted mask) of one normalised plane."""
    from scipy.ndimage import gaussian_filter

    from btunet.pipeline.planes import flip_entropy, flipped_outputs, object_probability
    from btunet.pipeline.uncertainty import binary_entropy as entropy
    from btunet.pipeline.uncertainty import forest_disagreement, stroke_uncertainty
    flips = flipped_outputs(lambda p: object_probability(net, p), pixels)
    prob = flips[0]
    pred = prob > threshold
    snaps = np.mean([object_probability(s, pixels) for s in snapshots] or [prob], axis=0)
    both = 0.5 * (prob + forest)
    out = {"flips": flip_entropy(flips), "margin": entropy(prob),
           "smooth": entropy(gaussian_filter(prob, SMOOTH_SIGMA)),
           "snapshots": entropy(snaps), "forest": forest_disagreement(prob, forest),
           "forest_margin": stroke_uncertainty(forest),
           "ensemble": entropy(both), "ensemble_smooth": entropy(gaussian_filter(both, SMOOTH_SIGMA)),
           "edge": edge_closeness(pred)}
    out["max"] = np.maximum(out["flips"], out["forest"])
    out["mean"] = 0.5 * (out["flips"] + out["forest"])
    return out, pred


def scores(maps: dict, errors: np.ndarray) -> dict:
    """{candidate: (ROC AUC, share of errors among the TOP most uncertain pixels, ROC AUC of the
    errors more than FAR_PX from the predicted edge against every correct pixel)}; {} without errors."""
    from sklearn.metrics import roc_auc_score
    if errors.all() or not errors.any():
        return {}
    k = max(1, int(TOP * errors.size))
    far = errors & (-maps["edge"] > FAR_PX)  # whole objects merged or missed, not a shifted edge
    keep = far | ~errors
    out = {}
    for name, m in maps.items():
        top = np.argpartition(-m.ravel(), k - 1)[:k]
        away = roc_auc_score(far[keep], m[keep]) if far.sum() >= MIN_FAR else np.nan
        out[name] = (round(float(roc_auc_score(errors.ravel(), m.ravel())), 4),
                     round(float(errors.ravel()[top].mean()), 4), round(float(away), 4))
    return out


def painted_item(ds: dict, style: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, truth, strokes) of round 0."""
    if style == SAMPLE_STYLE:
        from napari_btunet._sample_data import load_sample, sparse_annotation
        image, mask = load_sample()
        return image, mask, sparse_annotation(mask)
    _, image, mask = ds["train"][0]
    return image, mask, first_strokes(mask, style, seed=seed)


def run(ds_name: str, ds: dict, style: str, seed: int, settings: dict | None = None) -> dict:
    import btunet
    from btunet.core.checkpoint import model_metadata
    from btunet.core.metadata import Normalization
    from btunet.labels.annotations import targets_and_weights
    from btunet.pipeline.planes import as_model, plane_layout
    from btunet.train.teacher import forest_probabilities
    image, mask, strokes = painted_item(ds, style, seed)
    tests = ds["test"][::max(1, len(ds["test"]) // TEST_IMAGES)][:TEST_IMAGES]
    cfg = btunet.FinetuneConfig(model="unet", seed=seed, **(settings or {}))
    images = [image] + [im for _, im, _ in tests]
    truths = [mask > 0] + [m > 0 for _, _, m in tests]
    norm = Normalization(method=cfg.normalization)
    pixels = [plane_layout(im, 1, normalization=norm).read(im, ()) for im in images]
    target, weight = targets_and_weights(strokes, "sparse")
    blank = [np.zeros(p.shape[-2:], np.float32) for p in pixels[1:]]
    forests = forest_probabilities(pixels, [target] + blank, [weight > 0] + blank, seed=seed)
    total = cfg.total_epochs()
    keep = {max(1, round(f * total)) for f in SNAPSHOTS}
    snapshots: list = []
    early: dict = {}

    def on_progress(p) -> None:
        if not (p.epoch_end and p.model is not None):
            return
        if p.epoch in keep:
            snapshots.append(as_model(p.model, next(p.model.parameters()).device))
        if p.epoch == EARLY_EPOCH:  # what the first U-Net preview would show
            maps, pred = maps_of(as_model(p.model, next(p.model.parameters()).device), snapshots, pixels[0],
                                 forests[0], model_metadata(p.model).threshold)
            early.update(errors=round(float((pred != truths[0]).mean()), 4), scores=scores(maps, pred != truths[0]))

    t = time.perf_counter()
    net = btunet.finetune(image, strokes, cfg, on_progress=on_progress)
    seconds = time.perf_counter() - t
    meta = model_metadata(net)
    assert meta.normalization.method == norm.method and net.in_channels == 1
    infer = as_model(net, next(net.parameters()).device)
    snaps = snapshots[:-1] + [infer]  # the returned weights stand for the last epoch end
    per_image = []
    for px, truth, forest in zip(pixels, truths, forests, strict=True):
        maps, pred = maps_of(infer, snaps, px, forest, meta.threshold)
        errors = pred != truth
        per_image.append({"errors": round(float(errors.mean()), 4), "scores": scores(maps, errors)})
    rec = {"dataset": ds_name, "style": style, "seed": seed, "painted": int((strokes > 0).sum()),
           "painted_image": per_image[0], "early": early, "tests": per_image[1:], "seconds": round(seconds, 1),
           "eval_seconds": round(time.perf_counter() - t - seconds, 1), "load": load_average()}
    print(json.dumps({k: rec[k] for k in ("dataset", "style", "seed", "seconds", "load")}),
          {n: s[0] for n, s in per_image[0]["scores"].items()}, flush=True)
    return rec


# ------------------------------------------------------------------------------------- report
def summary(records: list[dict]) -> str:
    lines = [
        "## Uncertainty maps: which one points at the errors\n",
        (f"Generated by `benchmarks/uncertainty.py` on {stamp()} ({machine()}); load average beside each run. "
        "Round 0 of the painting loop (default settings, `unet`) on the tuning sets "
        f"{', '.join(DATASETS)}; style `{SAMPLE_STYLE}` is the plugin's sample image with its painted-looking "
        "annotation. Each map of the same model is scored by ROC AUC against the error pixels (prediction "
        "≠ truth) on the painted image and, averaged, on up to "
        f"{TEST_IMAGES} test images; *top 5 %* = the share of error pixels among the 5 % most uncertain "
        "pixels of the painted image.\n"),
        "Candidates:\n",
        *[f"- `{k}`: {v}" for k, v in CANDIDATES.items()],
        "",
    ]
    names = list(CANDIDATES)
    header = ["set", "style", "seed", "errors"] + names + ["s", "load"]
    for where in WHERE:
        lines.append(f"\n### ROC AUC on {WHERE[where]}\n")
        rows = []
        for r in records:
            err = (np.mean([t["errors"] for t in r["tests"]]) if where == "test" else
                   r["painted_image" if where == "painted" else "early"].get("errors", np.nan))
            rows.append([r["dataset"], r["style"], r["seed"], f"{err:.3f}"]
                        + [f"{auc(r, where, n):.3f}" for n in names] + [r["seconds"], r["load"]])
        if records:
            rows.append(["**mean**", "", "", ""] + [f"**{np.nanmean([auc(r, where, n) for r in records]):.3f}**"
                                                   for n in names] + ["", ""])
        lines.append(table(header, rows, "lllr" + "r" * len(names) + "rr"))
    if records:
        lines.append("\n### Share of errors among the 5 % most uncertain pixels of the painted image (mean)\n")
        lines.append(table(names, [[f"{np.nanmean([auc(r, 'painted', n, 1) for r in records]):.3f}" for n in names]],
                           "r" * len(names)))
        far = [r for r in records if not np.isnan(auc(r, "painted", CHOSEN, 2))]
        if far:
            lines.append(f"\n### ROC AUC of the errors more than {FAR_PX} px from the predicted edge (whole objects "
                         "merged or missed) against every correct pixel, painted image at the end\n")
            rows = [[r["dataset"], r["style"], r["seed"]] + [f"{auc(r, 'painted', n, 2):.3f}" for n in names]
                    for r in far]
            rows.append(["**mean**", "", ""] + [f"**{np.nanmean([auc(r, 'painted', n, 2) for r in far]):.3f}**"
                                               for n in names])
            lines.append(table(["set", "style", "seed"] + names, rows, "lll" + "r" * len(names)))
        lines.append(verdict(records))
    if NOTES.exists():
        lines.append("\n" + NOTES.read_text().rstrip())
    return "\n".join(lines) + "\n"


def verdict(records: list[dict]) -> str:
    """The counts the choice rests on, from the records."""
    out = [f"\n### Choice: `{CHOSEN}`\n", choice(records), ""]
    for where, label in WHERE.items():
        above = {n: sum(auc(r, where, n) >= 0.80 for r in records) for n in CANDIDATES}
        counts = ", ".join(f"`{n}` {above[n]}" for n in CANDIDATES)
        out.append(f"- {label[0].upper()}{label[1:]}: AUC ≥ 0.80 in {counts} of {len(records)} runs.")
    return "\n".join(out)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--styles", nargs="+", default=[SAMPLE_STYLE, *STYLES], choices=(SAMPLE_STYLE, *STYLES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--records", type=Path, default=RECORDS)
    ap.add_argument("--report", default="results_uncertainty.md")
    ap.add_argument("--report-only", action="store_true", help="rewrite the page from the records")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 epochs of 5 steps: checks the script, measures nothing")
    return ap.parse_args(argv)


def load_records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    records = load_records(args.records)
    done = {(r["dataset"], r["style"], r["seed"]) for r in records}
    if not args.report_only:
        args.records.parent.mkdir(parents=True, exist_ok=True)
        for ds_name in args.datasets:
            ds = load_dataset(ds_name, Path(args.data))
            for style in args.styles:
                if style == SAMPLE_STYLE and ds_name != "bbbc007":
                    continue
                for seed in args.seeds:
                    if (ds_name, style, seed) in done:
                        continue
                    rec = run(ds_name, ds, style, seed, {"epochs": 2, "steps_per_epoch": 5} if args.quick else None)
                    records.append(rec)
                    with args.records.open("a") as f:
                        f.write(json.dumps(rec) + "\n")
    write_section(args.report, summary(records))
    print(summary(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
