"""The painting loop, simulated: strokes, then correction rounds, for the U-Net and the random forest.

Per dataset and seed, a simulated annotator paints round 0 on one training image (an object
blob in some objects, background strokes in empty space: ``quality.scribbles``), then in each
round 1..R paints ``--budget`` more pixels where the current prediction of that image is wrong
(largest false-positive regions get background, largest false-negative regions get object) -
or, for the ``uncertainty`` user, where the model's uncertainty map is highest, with the true
label there. After each round the U-Net continues from its current weights (the engine's
continuation schedule), the random forest is retrained on all strokes; both predict the test
images. Records: test Dice, painted pixels, wall time of the round (training + preview of the
painted image), and how well the uncertainty map ranks real errors (ROC AUC). Writes
docs/results_interactive.md, docs/interactive_<set>.png, docs/data/interactive.jsonl.

    python benchmarks/interactive.py --quick      # one set, one seed, two rounds
    python benchmarks/interactive.py              # three sets x three seeds x three rounds
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import headlines  # noqa: E402
from _report import DEFAULT_DATA, DOCS, load_average, machine, stamp, table, write_section  # noqa: E402
from quality import HELD_OUT, get_encoder, load_dataset, rf_features  # noqa: E402

from btunet.train.simulate import STYLES, correct, correct_by_uncertainty, first_strokes  # noqa: E402

RECORDS = DOCS / "data" / "interactive.jsonl"
#: the sets defaults are tuned on; HELD_OUT (other modalities, one file per frame) are only reported
DATASETS = ("bbbc007", "cho_3dt", "cells3d")
ALL_DATASETS = DATASETS + HELD_OUT
METHODS = ("scratch", "scratch_mean", "scratch_flat", "scratch_radius12", "scratch_flat_radius12",
           "scratch_edges", "bt", "builtin", "builtin_edges", "builtin_lr3", "scratch_encoder_teacher",
           "builtin_encoder_teacher", "rf", "scratch_uncertainty", "strokes_only", "teacher_forest",
           "teacher_model", "scratch_background", "scratch_intensity", "scratch_epochs6",
           "scratch_average", "scratch_fine", "rf_fine", "allmodal")
#: records of runs made under earlier engine defaults, reported but not run again under that name
EARLIER = {"bt_flat_radius12": "`unet` Barlow Twins, flat weights, corrections overrule within 12 px "
                               "(an earlier run)",
           "scratch_uncertainty_flat_radius12": "`unet` from scratch, user guided by its uncertainty map, "
                                                "flat weights, corrections overrule within 12 px (an earlier run)"}
REPORTED = METHODS + tuple(EARLIER)
#: the alternatives that were tried for learning from strokes (engine settings of the `unet` run)
VARIANTS = {"scratch_mean": {"continue_teacher": "mean"}, "scratch_flat": {"pseudo_edge_weight": 0.0},
            "scratch_radius12": {"correction_radius": 12.0},
            "scratch_flat_radius12": {"pseudo_edge_weight": 0.0, "correction_radius": 12.0},
            "scratch_edges": {"pseudo_edge_weight": 10.0}, "strokes_only": {"pseudo_labels": "none"},
            "teacher_forest": {"continue_teacher": "forest"},
            "teacher_model": {"continue_teacher": "model"}, "builtin_lr3": {"encoder_lr_scale": 3.0},
            "builtin_edges": {"pseudo_edge_weight": 10.0},
            "scratch_encoder_teacher": {"teacher_features": "encoder"},
            "builtin_encoder_teacher": {"teacher_features": "encoder"},
            "scratch_background": {"normalization": "background"},
            "scratch_intensity": {"intensity_augment": 0.5}, "scratch_epochs6": {"epochs": 6},
            "scratch_average": {"weight_average": 0.97}, "scratch_fine": {"teacher_features": "fine"}}
LABELS = {"strokes_only": "`unet` from scratch, strokes only (no pseudo-labels)",
          "teacher_forest": "`unet` from scratch, continuation pseudo-labels from the forest alone",
          "teacher_model": "`unet` from scratch, continuation pseudo-labels from the model alone",
"scratch": "`unet` from scratch",
          "scratch_edges": "`unet` from scratch, the forest's edges weighed up (`pseudo_edge_weight=10`)",
          "scratch_mean": "`unet` from scratch, the forest votes at the model's edges in every continuation",
          "scratch_flat": "`unet` from scratch, flat pseudo-label weights (`pseudo_edge_weight=0`)",
          "scratch_radius12": "`unet` from scratch, corrections overrule the model's pseudo-labels within 12 px",
          "scratch_flat_radius12": "`unet` from scratch, flat weights, corrections overrule within 12 px",
          "bt": "`unet` Barlow Twins",
          "builtin": "`unet` from the built-in Barlow Twins encoder",
          "allmodal": "`unet` from the built-in encoder pre-trained further on every modality "
                      "(`scripts/pretrain_allmodal.sh`)",
          "builtin_edges": "`unet` from the built-in encoder, the forest's edges weighed up (`pseudo_edge_weight=10`)",
          "builtin_lr3": "`unet` from the built-in encoder, encoder learning rate x3",
          "rf": "random forest (ilastik-style)",
          "scratch_fine": "`unet` from scratch, the forest teacher also sees the raw pixel and sigma 0.3, 0.7 "
                          "(`teacher_features='fine'`)",
          "rf_fine": "random forest (ilastik-style) with the raw pixel and sigma 0.3, 0.7 as well",
          "scratch_encoder_teacher": "`unet` from scratch, forest teacher with the built-in encoder's features",
          "builtin_encoder_teacher": "`unet` from the built-in encoder, forest teacher with its features",
          "scratch_uncertainty": "`unet` from scratch, user guided by its uncertainty map",
          "scratch_background": "`unet` from scratch, normalised by the background peak (`normalization='background'`)",
          "scratch_intensity": "`unet` from scratch, intensity augmentation 0.5 (`intensity_augment=0.5`)",
          "scratch_epochs6": "`unet` from scratch, a first run of 6 epochs (`epochs=6`)",
          "scratch_average": "`unet` from scratch, moving average of the weights (`weight_average=0.97`)",
          "rf_full": "random forest, 1 fully annotated image", **EARLIER}


# ------------------------------------------------------------------------------------ methods
def image_dice(predictions: list[np.ndarray], ds: dict) -> list[float]:
    from btunet.labels.metrics import pixel_scores
    return [float(pixel_scores(p, m)["dice"]) for p, (_, _, m) in zip(predictions, ds["test"], strict=True)]


def test_dice(predictions: list[np.ndarray], ds: dict) -> float:
    return float(np.mean(image_dice(predictions, ds)))


def error_auroc(model, ds: dict) -> float:
    """ROC AUC of the uncertainty map for telling wrong pixels from right ones, on the test images."""
    from sklearn.metrics import roc_auc_score

    import btunet
    scores, wrong = [], []
    for _, image, mask in ds["test"]:
        r = btunet.predict(model, image, probabilities=False, uncertainty=True)
        scores.append(r.uncertainty.ravel()[::7])
        wrong.append(((r.labels > 0) != (mask > 0)).ravel()[::7])
    s, w = np.concatenate(scores), np.concatenate(wrong)
    return float(roc_auc_score(w, s)) if 0 < w.mean() < 1 else float("nan")


def said(ann: np.ndarray, before: np.ndarray, labels: np.ndarray, band: float = 3.0) -> dict:
    """What a round's corrections say about the model they correct (``labels``: its preview on the
    painted image): of the painted pixels it gets wrong, the share of background painted on its
    objects (too fat), and of those within ``band`` px of its edges, too fat or too thin."""
    from btunet.train.pseudo import edge_distance
    objects = labels > 0
    wrong = (ann > 0) & ((ann == 2) != objects)
    distance = edge_distance(objects.astype(np.int64))
    near = np.zeros_like(wrong) if distance is None else distance <= band
    n = max(int(wrong.sum()), 1)
    return {"wrong": int(wrong.sum()), "new": int(((ann > 0) & (before == 0)).sum()),
            "fat": round(float((wrong & objects).sum() / n), 3),
            "fat_near": round(float((wrong & objects & near).sum() / n), 3),
            "thin_near": round(float((wrong & ~objects & near).sum() / n), 3)}


class UNetUser:
    """The U-Net side of the loop: fresh fine-tune at round 0, continuation afterwards."""

    def __init__(self, encoder, seed: int, args, settings: dict | None = None):
        self.encoder, self.seed, self.args, self.model = encoder, seed, args, None
        self.settings = settings or {}
        self.corrections: dict | None = None  # what the last continuation's corrections said (``said``)
        self.last: tuple[np.ndarray, np.ndarray] | None = None  # (strokes, preview labels) of the last round

    def train(self, image: np.ndarray, ann: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        import btunet
        cfg = btunet.FinetuneConfig(model="unet", seed=self.seed, **self.settings)
        self.corrections = said(ann, *self.last) if self.last is not None else None
        t = time.perf_counter()
        if self.model is None:
            self.model = btunet.finetune(image, ann, cfg, encoder=self.encoder)
        else:
            self.model = btunet.finetune(image, ann, cfg.continuation(), model=copy.deepcopy(self.model))
        preview = btunet.predict(self.model, image, probabilities=False, uncertainty=True)
        self.last = (ann, preview.labels)
        return time.perf_counter() - t, preview.labels, preview.uncertainty

    def test(self, ds: dict) -> list[np.ndarray]:
        import btunet
        return [btunet.predict(self.model, image, probabilities=False).labels for _, image, _ in ds["test"]]


class ForestUser:
    """The random forest side: retrained from all strokes every round (what ilastik does)."""

    def __init__(self, seed: int, fine: bool = False):
        self.seed, self.forest, self.fine = seed, None, fine

    def train(self, image: np.ndarray, ann: np.ndarray) -> tuple[float, np.ndarray, None]:
        from sklearn.ensemble import RandomForestClassifier
        t = time.perf_counter()
        f = rf_features(image, self.fine)
        keep = ann > 0
        self.forest = RandomForestClassifier(n_estimators=50, max_depth=10, n_jobs=-1,
                                             random_state=self.seed).fit(f[keep], ann[keep] == 2)
        pred = self.forest.predict(f.reshape(-1, f.shape[-1])).reshape(image.shape)
        return time.perf_counter() - t, pred.astype(np.uint8), None

    def test(self, ds: dict) -> list[np.ndarray]:
        out = []
        for _, image, _ in ds["test"]:
            f = rf_features(image, self.fine)
            out.append(self.forest.predict(f.reshape(-1, f.shape[-1])).reshape(image.shape))
        return out


def forest_on_full_image(ds: dict, seed: int, max_pixels: int = 200_000) -> float:
    """The reference a correction loop should reach: the forest trained on one whole mask."""
    from sklearn.ensemble import RandomForestClassifier
    _, image, mask = ds["train"][0]
    f = rf_features(image)
    x, y = f.reshape(-1, f.shape[-1]), (mask > 0).ravel()
    pick = np.random.default_rng(seed).choice(len(y), min(max_pixels, len(y)), replace=False)
    forest = RandomForestClassifier(n_estimators=50, max_depth=10, n_jobs=-1, random_state=seed).fit(x[pick], y[pick])
    preds = []
    for _, im, _ in ds["test"]:
        g = rf_features(im)
        preds.append(forest.predict(g.reshape(-1, g.shape[-1])).reshape(im.shape))
    return test_dice(preds, ds)


def run_loop(ds_name: str, ds: dict, method: str, seed: int, args, encoder, style: str = "blobs") -> list[dict]:
    _, image, mask = ds["train"][0]
    user = (ForestUser(seed, fine=method == "rf_fine") if method in ("rf", "rf_fine") else
            UNetUser("builtin" if method.startswith("builtin") else args.allmodal if method == "allmodal"
                     else encoder if method == "bt" else None, seed, args, VARIANTS.get(method)))
    ann = first_strokes(mask, style, seed=seed)
    records, total_s = [], 0.0
    pred = uncertainty = None  # set by each round's training, used by the next round's corrections
    for rnd in range(args.rounds + 1):
        if rnd > 0:
            ann = (correct_by_uncertainty(ann, uncertainty, mask, args.budget) if method.endswith("uncertainty")
                   else correct(ann, pred, mask, args.budget))
        round_s, pred, uncertainty = user.train(image, ann)
        total_s += round_s
        rec = {"dataset": ds_name, "method": method, "seed": seed, "round": rnd, "style": style,
               "painted": int((ann > 0).sum()), "dice_images": image_dice(user.test(ds), ds),
               "round_s": round(round_s, 2), "total_s": round(total_s, 2), "load": load_average()}
        if getattr(user, "corrections", None) is not None:
            rec["corrections"] = user.corrections
        if not method.startswith("rf") and args.auroc:
            rec["error_auroc"] = error_auroc(user.model, ds)
        rec["dice"] = float(np.mean(rec["dice_images"]))
        rec["dice_images"] = [round(d, 4) for d in rec["dice_images"]]
        records.append(rec)
        print(json.dumps(rec), flush=True)
    return records


# ------------------------------------------------------------------------------------- report
def mean_std(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "—"
    return f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else "")


def summary(records: list[dict], args) -> str:
    lines = [f"## {args.title}", "",
             (f"Generated by `benchmarks/interactive.py` ({stamp()}, {machine()}, 1-min load at the end "
              f"{load_average()}; each record in [docs/data/{args.records.name}](data/{args.records.name}) "
              "carries the load when it finished)."), "",
             "Round 0: object blobs in 10 objects and eight 40-px background strokes on one training image "
             "(`btunet.train.simulate.scribbles`)" + (
                 f"; rounds 1-{args.rounds}: {args.budget} more painted pixels per round, "
                 "blobs in the largest wrong regions of the current prediction (false positives -> background, "
                 "false negatives -> object) or, for the uncertainty-guided user, in the brightest regions of "
                 "the model's uncertainty map with the true label. The U-Net continues from its weights each "
                 "round (`FinetuneConfig.continuation()`); the forest is retrained on all strokes"
                 if args.rounds > 0 else "; the U-Net fine-tunes with the engine's defaults") + ". Mean test "
             "Dice ± std over seeds; time = wall time of the round (training + preview of the painted "
             "image) on this machine. What was tried on the way, with its numbers: "
             "[benchmarks/interactive_notes.md](../benchmarks/interactive_notes.md).", ""]
    if any(r["dataset"] in HELD_OUT for r in records):
        lines += [(f"**Held out:** {', '.join(f'`{d}`' for d in HELD_OUT)} (phase contrast, bright field, one "
                  "file per frame; electron microscopy) were never used to choose a default; their rows are "
                  "reported as measured."), ""]
    if any(r.get("style", "blobs") != "blobs" for r in records):
        lines += ["Annotator styles of round 0 (`btunet.train.simulate.first_strokes`): "
                  + "; ".join(f"*{k}*: {v}" for k, v in STYLE_TEXT.items()) + ".", ""]
    for ds_name in ALL_DATASETS:
        for style in STYLES:
            recs = [r for r in records if r["dataset"] == ds_name and r["method"] != "rf_full"
                    and r.get("style", "blobs") == style]
            if recs:
                lines += dataset_section(records, recs, ds_name, style, args)
    return "\n".join(lines)


def dataset_section(records: list[dict], recs: list[dict], ds_name: str, style: str, args) -> list[str]:
    """One table: the methods' Dice per round on one set, for one annotator style."""
    full = [r["dice"] for r in records if r["dataset"] == ds_name and r["method"] == "rf_full"]
    seeds = sorted({r["seed"] for r in recs})
    rounds = sorted({r["round"] for r in recs})
    methods = [m for m in REPORTED if any(r["method"] == m for r in recs)]
    rows = []
    for m in methods:
        row = [LABELS[m]]
        for k in rounds:
            rr = [r for r in recs if r["method"] == m and r["round"] == k]
            secs = np.mean([r["round_s"] for r in rr]) if rr else 0.0
            row.append(f"{mean_std([r['dice'] for r in rr])} ({np.mean([r['painted'] for r in rr]):,.0f} px, "
                       f"{secs:.{0 if secs >= 10 else 1}f} s)" if rr else "—")
        au = [r.get("error_auroc", float("nan")) for r in recs if r["method"] == m]
        row.append(mean_std(au) if not m.startswith("rf") else "—")
        rows.append(row)
    held = " (held out)" if ds_name in HELD_OUT else ""
    heading = f"### {ds_name}{held}" + (f", {style} strokes" if style != "blobs" else "")
    lines = [heading, "", f"Seeds {seeds}; {ds_protocol(ds_name)}", ""]
    lines += [table(["method"] + [f"round {k}" for k in rounds]
                    + ["uncertainty ranks errors (ROC AUC, all rounds)"], rows), ""]
    if full:
        lines += [f"Random forest trained on the whole mask of the same image: Dice {mean_std(full)}.", ""]
    ran = {r["method"] for r in recs}
    lines += [f"* {paired(recs, m, rounds)}" for m in ("bt", "builtin", "scratch_uncertainty", *VARIANTS, *EARLIER)
              if m in ran and "scratch" in ran]
    if {"allmodal", "builtin"} <= ran:
        lines.append(f"* {paired(recs, 'allmodal', rounds, against='builtin')}")
    for unet, forest in (("scratch", "rf"), ("scratch_fine", "rf_fine")):
        if {unet, forest} <= ran:
            lines.append(f"* {paired(recs, forest, rounds, against=unet, sign=-1)}")
    lines.append("")
    if ds_name == "phc_psc_density":
        lines += density_lines(recs, methods, rounds)
    if args.records == RECORDS and style == "blobs":
        lines += [f"![Dice against painted pixels and time, {ds_name}](interactive_{ds_name}.png)", ""]
    return lines


def density_lines(recs: list[dict], methods: list[str], rounds: list[int]) -> list[str]:
    """The same crops alone (even test images) and inside background (odd ones), from the records that
    keep each image's Dice: a rule the fraction of foreground cannot move scores both alike."""
    rows = []
    for m in methods:
        row = [LABELS[m]]
        for k in rounds:
            per = [r["dice_images"] for r in recs if r["method"] == m and r["round"] == k and "dice_images" in r]
            row.append(f"{np.mean([d[0::2] for d in per]):.3f} / {np.mean([d[1::2] for d in per]):.3f}" if per else "—")
        rows.append(row)
    if all(cell == "—" for row in rows for cell in row[1:]):
        return []
    return [("Crowded crops alone / the same crops inside background (mean Dice, runs that kept each image's "
            "Dice):"), "", table(["method"] + [f"round {k}" for k in rounds], rows), ""]


def paired(recs: list[dict], method: str, rounds: list[int], against: str = "scratch", sign: int = 1) -> str:
    """Dice of ``method`` minus the error-guided `unet` from scratch, on the seeds both ran
    (``sign=-1``: the other way round)."""
    seeds = sorted({r["seed"] for r in recs if r["method"] == method})
    def dice(m: str, k: int) -> float:
        return float(np.mean([r["dice"] for r in recs if r["method"] == m and r["round"] == k and r["seed"] in seeds]))
    deltas = ", ".join(f"round {k} {sign * (dice(method, k) - dice(against, k)):+.3f}" for k in rounds)
    first, second = (LABELS[method], LABELS[against]) if sign > 0 else (LABELS[against], LABELS[method])
    return f"{first} minus {second} (seeds {seeds}): {deltas}."


def ds_protocol(name: str) -> str:
    return {"bbbc007": "painted image: the first training file; 10 test images.",
            "cho_3dt": "painted image: frame 0 (z = 2); test frames 4-19.",
            "cells3d": "painted image: plane z = 34; test planes z = 20, 24, ..., 52.",
            "phc_psc": "painted file: t000.tif; test: every 5th file from t005.tif to t045.tif (9), each on its own.",
            "bsubtilis_bf": "painted file: t000.tif; test: t001.tif-t003.tif, each on its own.",
            "mothermachine_phase": "painted file: pos01_t001.tif; test: the other 9 files, each on its own.",
            "phc_psc_density": "painted file: t000.tif; test: 4 crowded 192-px crops of other frames, each alone "
                               "and inside a canvas 4x its area tiled from cell-free background (8 images).",
            "fibsem_classes": "one FIB/SEM image (1024 x 1536), painted and scored on itself (needle and lamella "
                              "are object); its only test image is the painted one."}[name]


#: what each annotator style paints in round 0
STYLE_TEXT = {"blobs": "a disk in 10 objects and eight 40-px background strokes",
              "along": "a brush stroke along the long axis of 10 objects and eight background strokes",
              "scribble": "four long scribbles across objects and gaps, each pixel painted with what lies under it "
                          "except within 1 px of an object border",
              "hurried": "a disk in 3 objects and three background strokes"}


def plot(records: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for ds_name in DATASETS:
        recs = [r for r in records if r["dataset"] == ds_name and r["method"] in REPORTED]
        if not recs:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for m in REPORTED:
            rr = [r for r in recs if r["method"] == m]
            if not rr:
                continue
            rounds = sorted({r["round"] for r in rr})

            def mean(key, k, rr=rr):
                return np.mean([r[key] for r in rr if r["round"] == k])
            for ax, key in zip(axes, ("painted", "total_s"), strict=True):
                ax.plot([mean(key, k) for k in rounds], [mean("dice", k) for k in rounds], "-o",
                        label=LABELS[m].replace("`", ""))
        full = [r["dice"] for r in records if r["dataset"] == ds_name and r["method"] == "rf_full"]
        for ax, xl in zip(axes, ("painted pixels", "cumulative wall time (s)"), strict=True):
            if full:
                ax.axhline(np.mean(full), color="gray", ls=":", label="forest, 1 full mask")
            ax.set_xlabel(xl)
            ax.set_ylabel("mean test Dice")
            ax.grid(alpha=0.3)
        axes[0].set_title(f"{ds_name}: Dice vs painted pixels")
        axes[1].set_title(f"{ds_name}: Dice vs wall time")
        axes[1].legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(DOCS / f"interactive_{ds_name}.png", dpi=100)
        plt.close(fig)


# ---------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="bbbc007, seed 0, 2 rounds, no Barlow Twins")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=ALL_DATASETS,
                   help=f"default: the tuning sets; held out (report only, never tune on them): {', '.join(HELD_OUT)}")
    p.add_argument("--styles", nargs="+", default=["blobs"], choices=STYLES,
                   help="annotator styles of round 0 (default: blobs)")
    p.add_argument("--methods", nargs="+", default=["scratch", "bt", "rf", "scratch_uncertainty"], choices=METHODS,
                   help="default: the four main ones; strokes_only, teacher_forest, teacher_model are the "
                        "alternatives that were tried; builtin, builtin_lr3 start from the packaged encoder")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget", type=int, default=300, help="painted pixels per correction round (default 300)")
    p.add_argument("--pretrain-seconds", type=float, default=120.0)
    p.add_argument("--pretrain-batch", type=int, default=16)
    p.add_argument("--no-auroc", dest="auroc", action="store_false", help="skip the uncertainty ranking")
    p.add_argument("--cache", default=str(Path(__file__).resolve().parent.parent / "runs" / "encoders"))
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--allmodal", default=str(Path(__file__).resolve().parent.parent / "runs" / "allmodal.safetensors"),
                   help="the encoder the allmodal method starts from (scripts/pretrain_allmodal.sh)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--fresh", action="store_true", help="start a new records file instead of adding to it")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--records", type=Path, default=RECORDS, help="records file (default: %(default)s)")
    p.add_argument("--report", default="results_interactive.md", help="page under docs/ the table goes to")
    p.add_argument("--title", default="The painting loop", help="the page's heading")
    args = p.parse_args(argv)
    if args.quick:
        args.datasets, args.seeds, args.rounds = ["bbbc007"], [0], 2
        args.methods = [m for m in args.methods if m != "bt"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    args.records.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh and args.records.exists() and not args.report_only:
        args.records.unlink()
    records = [json.loads(line) for line in args.records.read_text().splitlines()] if args.records.exists() else []
    done = {(r["dataset"], r["method"], r["seed"], r.get("style", "blobs")) for r in records}

    def add(new: list[dict]) -> None:
        records.extend(new)
        with args.records.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in new)

    if not args.report_only:
        data = Path(args.data)
        for ds_name in args.datasets:
            ds = load_dataset(ds_name, data)
            for seed in args.seeds:
                if (ds_name, "rf_full", seed, "blobs") not in done:
                    add([{"dataset": ds_name, "method": "rf_full", "seed": seed, "round": 0,
                          "dice": forest_on_full_image(ds, seed), "painted": int(ds["train"][0][2].size)}])
                for style in args.styles:
                    for method in args.methods:
                        if (ds_name, method, seed, style) in done:
                            continue
                        encoder = get_encoder(ds_name, ds, "unet", args, data)[0] if method == "bt" else None
                        add(run_loop(ds_name, ds, method, seed, args, encoder, style))
    if args.records == RECORDS:  # the figures belong to the main records
        plot(records)
    write_section(args.report, summary(records, args))
    if args.records == RECORDS:
        headlines.update()  # the README's painting-loop headline, from the records just written
    print(summary(records, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
