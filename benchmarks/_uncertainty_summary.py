"""The uncertainty benchmark's candidates, its choice and the numbers the docs quote, from its records.

Kept apart from ``uncertainty.py`` (which trains) so that ``headlines.py`` can fill the docs'
``uncertainty`` block without importing the training side.
"""
from __future__ import annotations

import numpy as np

SMOOTH_SIGMA = 2.0  # px, as btunet.pipeline.uncertainty.SMOOTH_SIGMA
CANDIDATES = {
    "flips": "entropy of the mean of four test-time flips (the map `btunet predict` gives)",
    "margin": "entropy of the model's probability, one pass",
    "smooth": f"entropy of the model's probability blurred by a Gaussian of sigma {SMOOTH_SIGMA:g} px",
    "snapshots": "entropy of the mean probability of the epoch ends at 1/2, 3/4 and the end of the run",
    "forest": "disagreement |p_model − p_forest| with the forest on the same strokes",
    "forest_margin": "entropy of the forest's own probability (`btunet.pipeline.uncertainty.stroke_uncertainty`)",
    "max": "max(flips, forest disagreement)",
    "mean": "mean(flips, forest disagreement)",
    "ensemble": "entropy of the mean of the model's and the forest's probabilities",
    "ensemble_smooth": f"`ensemble` with the mean blurred by a Gaussian of sigma {SMOOTH_SIGMA:g} px first",
    "edge": "closeness to the predicted edge (trivial baseline)",
}
CHOSEN = "forest_margin"  # btunet.pipeline.uncertainty.stroke_uncertainty
BEFORE = "flips"
BASELINE = "edge"
SAMPLE_STYLE = "sample"  # the plugin's sample: its image and painted-looking annotation (bbbc007 only)
EARLY_EPOCH = 2  # the live preview shows the U-Net from this epoch's end on (napari_btunet/_live_preview.py)
WHERE = {"painted": "the painted image at the end", "early": f"the painted image at the end of epoch {EARLY_EPOCH} "
         "(the first U-Net preview)", "test": "the test images at the end (mean)"}
GOAL = 0.80


def auc(rec: dict, where: str, name: str, k: int = 0) -> float:
    """A candidate's ROC AUC (k = 0), top share (k = 1) or AUC of the errors away from the edge
    (k = 2): on the painted image (at the end or early), or the mean over test images."""
    def pick(scores: dict) -> float:  # records before the away-from-edge AUC hold two numbers
        values = scores.get(name, ())
        return values[k] if k < len(values) else np.nan
    if where in ("painted", "early"):
        return pick(rec["painted_image" if where == "painted" else "early"].get("scores", {}))
    values = [pick(t["scores"]) for t in rec["tests"]]
    return float(np.nanmean(values)) if not np.isnan(values).all() else np.nan


def spread(records: list[dict], where: str, name: str) -> str:
    values = [auc(r, where, name) for r in records]
    return f"{np.nanmean(values):.2f} ({np.nanmin(values):.2f}–{np.nanmax(values):.2f})"


def choice(records: list[dict]) -> str:
    """Why the chosen map: its rank by mean AUC in each place, the runs it reaches the goal in,
    and how often it beats the edge baseline."""
    lines = []
    for where, label in WHERE.items():
        means = {n: np.nanmean([auc(r, where, n) for r in records]) for n in CANDIDATES}
        rank = sorted(means, key=means.get, reverse=True).index(CHOSEN) + 1
        goal = sum(auc(r, where, CHOSEN) >= GOAL for r in records)
        above = sum(auc(r, where, CHOSEN) > auc(r, where, BASELINE) for r in records)
        lines.append(f"- {label[0].upper()}{label[1:]}: `{CHOSEN}` ranks {rank} of {len(CANDIDATES)} by mean AUC "
                     f"({means[CHOSEN]:.3f}; `{BEFORE}` {means[BEFORE]:.3f}, `{BASELINE}` {means[BASELINE]:.3f}); "
                     f"AUC ≥ {GOAL:.2f} in {goal} of {len(records)} runs; above `{BASELINE}` in {above} of "
                     f"{len(records)}.")
    return "\n".join(lines)


def headline(records: list[dict]) -> str:
    """The docs' block: the chosen map against the map before and the baseline, mean (min–max) AUC."""
    if not records:
        return "(no records yet: run `python benchmarks/uncertainty.py`)"
    sets = ", ".join(dict.fromkeys(r["dataset"] for r in records))
    styles = ", ".join(dict.fromkeys(r["style"] for r in records))
    rows = [("| ROC AUC against error pixels, mean (min–max) | the forest's entropy (shown while "
             "fine-tuning) | four flips (`btunet predict`) | distance to the predicted edge (baseline) |"),
            "| --- | ---: | ---: | ---: |"]
    for where, label in WHERE.items():
        rows.append(f"| {label} | {spread(records, where, CHOSEN)} | {spread(records, where, BEFORE)} | "
                    f"{spread(records, where, BASELINE)} |")
    far = [r for r in records if not np.isnan(auc(r, "painted", CHOSEN, 2))]
    if far:
        rows.append("| the painted image at the end, only errors away from the edge (whole objects merged or "
                    f"missed; {len(far)} runs) | " + " | ".join(
                        f"{np.nanmean([auc(r, 'painted', n, 2) for r in far]):.2f}" for n in (CHOSEN, BEFORE, BASELINE))
                    + " |")
    sample = [r for r in records if r["style"] == SAMPLE_STYLE]
    text = (f"Measured on {len(records)} fine-tunes ({sets}; styles {styles}; "
            "[docs/results_uncertainty.md](results_uncertainty.md)):\n\n" + "\n".join(rows))
    if sample:
        def mean(where: str, name: str) -> str:
            return f"{np.nanmean([auc(r, where, name) for r in sample]):.2f}"
        text += (f"\n\nOn the plugin's sample with its painted-looking strokes ({len(sample)} seeds): "
                 f"{mean('early', CHOSEN)} at the first U-Net preview and {mean('painted', CHOSEN)} at the end "
                 f"(four flips: {mean('early', BEFORE)} and {mean('painted', BEFORE)}).")
    return text
