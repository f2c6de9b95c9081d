"""Objects that touch, and several classes, on BBBC007 (shared data).

Part 1, instances: the first 2 images (sorted) are densely annotated with their instance masks,
the other 12 are the test set. Methods: the U-Net with a learnt boundary channel (the
opt-in `--boundary`) and the same U-Net without it (instances by today's
distance-transform watershed), against Otsu and a random forest, both + that watershed.
Scores: pixel Dice, object F1 at IoU 0.5, average precision at IoU 0.5:0.05:0.95.

Part 2, classes: three labels built from the same masks (nuclei, a 4-px ring around each
nucleus, background), painted as sparse strokes on the first image; the U-Net and a random
forest get the same strokes; per-class Dice on the test images.

    python benchmarks/objects.py --seconds 75 --seeds 0
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
from quality import load_dataset, rf_features  # noqa: E402

RING = 4  # px of the ring class around each nucleus


def instance_scores(preds: list, truths: list) -> dict:
    from btunet.metrics import object_scores, pixel_scores
    per = [{**pixel_scores(p, t), **object_scores(p, t)} for p, t in zip(preds, truths)]
    return {k: float(np.mean([s[k] for s in per])) for k in ("dice", "object_f1", "ap", "ap50", "mean_matched_iou")}


def run_unet(ds: dict, seed: int, seconds: float, boundary: bool) -> dict:
    import btunet
    images = [im for _, im, _ in ds["train"][:2]]
    masks = [m for _, _, m in ds["train"][:2]]
    cfg = btunet.FinetuneConfig(mask_mode="dense", seed=seed, time_budget_s=seconds,
                                instances="auto" if boundary else "none")
    t = time.perf_counter()
    net = btunet.finetune(images, masks, cfg)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    preds = [btunet.predict(net, im, instances=True, probabilities=False).labels for _, im, _ in ds["test"]]
    assert (net.metadata.get("instances") == "boundary") == boundary
    return {**instance_scores(preds, [m for _, _, m in ds["test"]]), "train_s": train_s,
            "predict_s": time.perf_counter() - t, "epochs": net.metadata["epochs"]}


def run_otsu(ds: dict) -> dict:
    from btunet.instances import distance_instances
    from quality import norm
    from skimage.filters import threshold_otsu
    preds = []
    for _, im, _ in ds["test"]:
        x = norm(im)
        preds.append(distance_instances(x > threshold_otsu(x)))
    return {**instance_scores(preds, [m for _, _, m in ds["test"]]), "train_s": 0.0}


def forest(xs: list, ys: list, seed: int, max_pixels: int = 200_000):
    from sklearn.ensemble import RandomForestClassifier
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(y) > max_pixels:
        pick = np.random.default_rng(seed).choice(len(y), max_pixels, replace=False)
        x, y = x[pick], y[pick]
    return RandomForestClassifier(n_estimators=50, max_depth=10, n_jobs=1, random_state=seed).fit(x, y)


def run_forest(ds: dict, seed: int) -> dict:
    from btunet.instances import distance_instances
    t = time.perf_counter()
    feats = [rf_features(im) for _, im, _ in ds["train"][:2]]
    clf = forest([f.reshape(-1, f.shape[-1]) for f in feats],
                 [(m > 0).ravel() for _, _, m in ds["train"][:2]], seed)
    train_s = time.perf_counter() - t
    preds = []
    for _, im, _ in ds["test"]:
        f = rf_features(im)
        preds.append(distance_instances(clf.predict(f.reshape(-1, f.shape[-1])).reshape(im.shape)))
    return {**instance_scores(preds, [m for _, _, m in ds["test"]]), "train_s": train_s}


# ------------------------------------------------------------------------------ three classes
def ring_classes(mask: np.ndarray) -> np.ndarray:
    """0 = background, 1 = nucleus, 2 = a RING-px ring around every nucleus."""
    from scipy import ndimage as ndi
    near = ndi.distance_transform_edt(mask == 0) <= RING
    return np.where(mask > 0, 1, np.where(near, 2, 0)).astype(np.uint8)


def class_strokes(classes: np.ndarray, seed: int, every: int = 12) -> np.ndarray:
    """Sparse labels (1 = background, 2 = nucleus, 3 = ring): short horizontal strokes on every
    ``every``-th row, kept 1 px inside their class so no stroke crosses a class border."""
    from scipy import ndimage as ndi
    rng = np.random.default_rng(seed)
    strokes = np.zeros(classes.shape, np.uint8)
    for k in range(3):
        inside = ndi.binary_erosion(classes == k)
        rows = np.zeros_like(inside)
        rows[rng.integers(0, every)::every] = True
        strokes[inside & rows] = k + 1
    return strokes


def class_dice(preds: list, truths: list) -> dict:
    from btunet.metrics import class_dice as dice
    per = [dice(p, t, [1, 2]) for p, t in zip(preds, truths)]
    return {k: float(np.mean([s[k] for s in per])) for k in per[0]}


def run_classes(ds: dict, seed: int, seconds: float) -> list[dict]:
    import btunet
    _, image, mask = ds["train"][0]
    strokes = class_strokes(ring_classes(mask), seed)
    truths = [ring_classes(m) for _, _, m in ds["test"]]
    cfg = btunet.FinetuneConfig(mask_mode="sparse", seed=seed, time_budget_s=seconds, class_names=["nucleus", "ring"])
    t = time.perf_counter()
    net = btunet.finetune(image, strokes, cfg)
    train_s = time.perf_counter() - t
    preds = [btunet.predict(net, im, probabilities=False).labels for _, im, _ in ds["test"]]
    out = [{"method": "unet (3 labels, sparse)", **class_dice(preds, truths), "train_s": train_s,
            "painted_pixels": int((strokes > 0).sum())}]
    t = time.perf_counter()
    f = rf_features(image)
    clf = forest([f[strokes > 0]], [strokes[strokes > 0] - 1], seed)
    train_s = time.perf_counter() - t
    preds = []
    for _, im, _ in ds["test"]:
        g = rf_features(im)
        preds.append(clf.predict(g.reshape(-1, g.shape[-1])).reshape(im.shape).astype(np.uint8))
    out.append({"method": "random forest (same strokes)", **class_dice(preds, truths), "train_s": train_s,
                "painted_pixels": int((strokes > 0).sum())})
    return out


# ------------------------------------------------------------------------------------- report
def summary(records: list[dict], args) -> str:
    fmt = lambda vals: (f"{np.mean(vals):.3f}" + (f" ± {np.std(vals):.3f}" if len(vals) > 1 else ""))
    lines = ["## Touching objects and several classes (BBBC007)\n",
             f"Generated by `benchmarks/objects.py` on {stamp()}; {machine()}; load average {load_average()} "
             f"(other jobs shared the CPU). Seeds: {', '.join(map(str, args.seeds))} "
             f"({len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''}: each fine-tune has a "
             f"{args.seconds:g} s time budget on 2 shared cores). Raw records: `docs/data/objects.jsonl`; "
             "what the runs show: [benchmarks/objects_notes.md](../benchmarks/objects_notes.md).\n",
             "### Instances\n",
             "Training: the first 2 images (sorted) with their instance masks (dense); test: the other 12. "
             "Every method's objects come from its own mask: the U-Net with a boundary channel by the seeded "
             "watershed on its boundary map, every other method by the distance-transform watershed "
             "(`btunet predict --instances`). Means over test images (± std over seeds).\n"]
    rows = []
    for method in dict.fromkeys(r["method"] for r in records if r["part"] == "instances"):
        rs = [r for r in records if r["method"] == method]
        rows.append([method] + [fmt([r[k] for r in rs]) for k in ("dice", "object_f1", "ap", "ap50", "mean_matched_iou")]
                    + [f"{np.mean([r['train_s'] for r in rs]):.0f}"])
    lines.append(table(["method", "pixel Dice", "object F1@0.5", "AP@0.5:0.95", "AP@0.5", "matched IoU",
                        "train s"], rows))
    lines += ["\n### Three classes from sparse strokes\n",
              f"Labels built from the BBBC007 masks: nucleus, a {RING}-px ring around each nucleus (the "
              "halo just outside it), background. Strokes: short rows inside each class on the first image "
              "(1 px away from class borders); the U-Net and the random forest (same features as the "
              "quality benchmark) get the same strokes. Dice of each class on the 12 test images.\n"]
    rows = []
    for method in dict.fromkeys(r["method"] for r in records if r["part"] == "classes"):
        rs = [r for r in records if r["method"] == method]
        rows.append([method, fmt([r["dice_class_1"] for r in rs]), fmt([r["dice_class_2"] for r in rs]),
                     rs[0]["painted_pixels"], f"{np.mean([r['train_s'] for r in rs]):.0f}"])
    lines.append(table(["method", "Dice nucleus", "Dice ring", "painted px", "train s"], rows))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--seconds", type=float, default=75.0, help="time budget of each fine-tune")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(2)
    ds = load_dataset("bbbc007", args.data)
    ds["train"], ds["test"] = ds["train"][:2], ds["train"][2:] + ds["test"]  # 2 training, 12 test images
    records = []
    out = DOCS / "data" / "objects.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)

    def add(rec: dict) -> None:
        records.append(rec)
        print(json.dumps(rec), flush=True)

    add({"part": "instances", "method": "Otsu + distance watershed", "seed": None, **run_otsu(ds)})
    for seed in args.seeds:
        add({"part": "instances", "method": "random forest + distance watershed", "seed": seed,
             **run_forest(ds, seed)})
        add({"part": "instances", "method": "unet + boundary watershed", "seed": seed,
             **run_unet(ds, seed, args.seconds, True)})
        add({"part": "instances", "method": "unet + distance watershed", "seed": seed,
             **run_unet(ds, seed, args.seconds, False)})
        for rec in run_classes(ds, seed, args.seconds):
            add({"part": "classes", "seed": seed, **rec})
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    write_section("results_objects.md", summary(records, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
