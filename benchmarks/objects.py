"""Objects that touch, and several classes, on the shared data.

Part 1, instances: 2 images are densely annotated with their instance masks, the rest is the
test set (BBBC007: the first 2 files sorted, 12 test images; `cells3d` and `cho_3dt`: the first
2 planes of `quality.py`'s training pool and its test planes). Methods: the U-Net with a learnt boundary channel (the
opt-in `--boundary`) and the same U-Net without it (instances by today's
distance-transform watershed), against Otsu and a random forest, both + that watershed.
Scores: pixel Dice, object F1 at IoU 0.5, average precision at IoU 0.5:0.05:0.95.

Part 2, classes: three labels built from the same masks (nuclei, a 4-px ring around each
nucleus, background), painted as sparse strokes on the first image; the U-Net and a random
forest get the same strokes; per-class Dice on the test images.

    python benchmarks/objects.py --epochs 20 --seeds 0 1 2 --datasets bbbc007 cells3d cho_3dt

Records are appended to docs/data/objects.jsonl as each run ends; a rerun skips the runs it
already has (same dataset, method, seed and fine-tune length), so a long run can be split.
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
from headlines import TUNED  # noqa: E402
from objects_sets import ALL, CROWDED, VOLUMES, Z_SPACING, load  # noqa: E402
from quality import rf_features  # noqa: E402

from btunet.core.config import FinetuneConfig  # noqa: E402
from btunet.pipeline.separation import CLEAR_MARGIN, ELONGATED, LARGE_OBJECT_PX, MIN_VALIDATION_OBJECTS  # noqa: E402

RING = 4  # px of the ring class around each nucleus
#: The U-Net with a boundary channel, its objects split as it chose at fine-tuning
#: (``btunet.pipeline.separation``: held-out objects when they are clear, else the objects' size). Earlier
#: records: "unet + boundary watershed" (always the borders), "unet + borders, split by validation
#: F1 alone" (the better F1 on held-out objects, a tie to the watershed).
CHOSEN = "unet + borders, split as the model chose"
EARLIER_CHOICE = "unet + borders, split by validation F1 alone"
#: The rule before objects' shape counted (validation, else size alone), on the crowded sets.
SIZE_RULE = "unet + borders, split by validation or size"


#: Means over test images of these scores (``btunet.labels.metrics``): pixel, object and count scores.
SCORES = ("dice", "object_f1", "ap", "ap50", "mean_matched_iou", "count_error", "splits", "merges", "n_pred",
          "n_true")


def instance_scores(preds: list, truths: list) -> dict:
    from btunet.labels.metrics import object_scores, pixel_scores
    per = [{**pixel_scores(p, t), **object_scores(p, t)} for p, t in zip(preds, truths, strict=True)]
    return {k: float(np.mean([s[k] for s in per])) for k in SCORES}


def length(args) -> dict:
    """FinetuneConfig fields of the fine-tune's length: fixed epochs, or a time budget."""
    return {"epochs": args.epochs} if args.epochs else {"time_budget_s": args.seconds}


def run_unet(ds: dict, seed: int, args, boundary: bool) -> dict:
    import btunet
    images = [im for _, im, _ in ds["train"]]
    masks = [m for _, _, m in ds["train"]]
    cfg = btunet.FinetuneConfig(mask_mode="dense", seed=seed, instances="auto" if boundary else "none",
                                tune_threshold=args.threshold == "tuned", **length(args))
    t = time.perf_counter()
    net = btunet.finetune(images, masks, cfg)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    truths = [m for _, _, m in ds["test"]]
    kw = {"instances": True, "probabilities": False, **ds["predict"]}  # 3-D sets: the Z spacing
    preds = [btunet.predict(net, im, **kw).labels for _, im, _ in ds["test"]]
    predict_s = time.perf_counter() - t
    assert (net.metadata.get("instances") == "boundary") == boundary
    assert net.metadata["min_size"] == train_floor(ds)  # the model's floor: the baselines' too
    rec = {**instance_scores(preds, truths), "train_s": train_s, "predict_s": predict_s,
           "epochs": net.metadata["epochs"], "min_size": net.metadata["min_size"],
           "threshold": net.metadata["threshold"]}
    if net.metadata["threshold"] != cfg.threshold:  # what the configured threshold would have given
        fixed = [btunet.predict(net, im, **kw, threshold=cfg.threshold).labels
                 for _, im, _ in ds["test"]]
        rec["at_configured_threshold"] = {k: v for k, v in instance_scores(fixed, truths).items()
                                          if k in ("dice", "object_f1", "ap")}
    tta = [btunet.predict(net, im, **kw, tta=True).labels for _, im, _ in ds["test"]]
    rec["with_tta"] = {k: v for k, v in instance_scores(tta, truths).items() if k in ("dice", "object_f1", "ap")}
    if boundary:  # the choice made on validation objects, and what each way gives on the test images
        rec["separate_by"], rec["separation"] = net.metadata["separate_by"], net.metadata.get("separation")
        rec["test_object_f1"] = {
            way: instance_scores([btunet.predict(net, im, **kw, separate_by=way).labels
                                  for _, im, _ in ds["test"]], truths)["object_f1"] for way in ("boundary", "distance")}
    return rec


def train_floor(ds: dict) -> int:
    """The object-size floor a model trained on the 2 training masks stores (``btunet.labels.instances``)."""
    from btunet.labels.instances import object_sizes, size_floor
    return size_floor(np.concatenate([object_sizes(m) for _, _, m in ds["train"]]))


def run_otsu(ds: dict) -> dict:
    from quality import norm
    from skimage.filters import threshold_otsu

    from btunet.labels.instances import distance_instances
    preds, floor = [], train_floor(ds)
    for _, im, _ in ds["test"]:
        x = norm(im)
        preds.append(distance_instances(x > threshold_otsu(x), min_size=floor_of(ds, im, floor),
                                        sampling=sampling(ds, im)))
    return {**instance_scores(preds, [m for _, _, m in ds["test"]]), "train_s": 0.0, "min_size": floor}


def sampling(ds: dict, image: np.ndarray) -> tuple | None:
    """The pixel size along each axis of a 3-D test volume (Z spacing, 1, 1); None for a plane."""
    return (ds["predict"]["z_spacing"], 1.0, 1.0) if image.ndim == 3 and "z_spacing" in ds["predict"] else None


def floor_of(ds: dict, image: np.ndarray, floor: int) -> int:
    """The size floor of a test image: in a volume the voxels the model's floor becomes
    (``instances.volume_floor``, as ``predict`` does), so every method drops the same objects."""
    from btunet.labels.instances import volume_floor
    spacing = sampling(ds, image)
    return floor if spacing is None else volume_floor(floor, spacing[0], image.shape[0])


def forest(xs: list, ys: list, seed: int, max_pixels: int = 200_000):
    from sklearn.ensemble import RandomForestClassifier
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(y) > max_pixels:
        pick = np.random.default_rng(seed).choice(len(y), max_pixels, replace=False)
        x, y = x[pick], y[pick]
    return RandomForestClassifier(n_estimators=50, max_depth=10, n_jobs=1, random_state=seed).fit(x, y)


def volume_features(image: np.ndarray) -> list[np.ndarray]:
    """``rf_features`` of each plane of a plane or a volume; a volume's planes are normalised by
    the volume's own percentiles, as ``predict`` does (per plane, the noise of an empty plane would
    be stretched into objects)."""
    if image.ndim == 2:
        return [rf_features(image)]
    from skimage.feature import multiscale_basic_features

    from btunet.pipeline.normalize import normalize_plane, percentile_range
    lo, hi = percentile_range(image)
    return [multiscale_basic_features(normalize_plane(x, lo, hi), intensity=True, edges=True, texture=True,
                                      sigma_min=1, sigma_max=16) for x in image]


def run_forest(ds: dict, seed: int) -> dict:
    from btunet.labels.instances import distance_instances
    t = time.perf_counter()
    feats = [rf_features(im) for _, im, _ in ds["train"]]
    clf = forest([f.reshape(-1, f.shape[-1]) for f in feats],
                 [(m > 0).ravel() for _, _, m in ds["train"]], seed)
    train_s = time.perf_counter() - t
    preds, floor = [], train_floor(ds)
    for _, im, _ in ds["test"]:  # a volume plane by plane, its objects in 3-D
        mask = np.stack([clf.predict(f.reshape(-1, f.shape[-1])).reshape(f.shape[:-1])
                         for f in volume_features(im)]).reshape(im.shape)
        preds.append(distance_instances(mask, min_size=floor_of(ds, im, floor), sampling=sampling(ds, im)))
    return {**instance_scores(preds, [m for _, _, m in ds["test"]]), "train_s": train_s, "min_size": floor}


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
    from btunet.labels.metrics import class_dice as dice
    per = [dice(p, t, [1, 2]) for p, t in zip(preds, truths, strict=True)]
    return {k: float(np.mean([s[k] for s in per])) for k in per[0]}


def class_method(args) -> str:
    """The U-Net's name in the class records: the teacher's features and edge weight where they are
    not the engine's defaults."""
    weight, default = args.pseudo_edge_weight, FinetuneConfig.pseudo_edge_weight
    return ("unet (3 labels, sparse)" + (", encoder teacher" if args.teacher_features == "encoder" else "")
            + ("" if weight == default else ", flat teacher weights" if weight == 0
               else f", teacher's edges weighed {weight:g}"))


def run_classes(ds: dict, seed: int, args) -> list[dict]:
    import btunet
    _, image, mask = ds["train"][0]
    strokes = class_strokes(ring_classes(mask), seed)
    truths = [ring_classes(m) for _, _, m in ds["test"]]
    cfg = btunet.FinetuneConfig(mask_mode="sparse", seed=seed, class_names=["nucleus", "ring"],
                                teacher_features=args.teacher_features,
                                pseudo_edge_weight=args.pseudo_edge_weight, **length(args))
    t = time.perf_counter()
    net = btunet.finetune(image, strokes, cfg)
    train_s = time.perf_counter() - t
    preds = [btunet.predict(net, im, probabilities=False).labels for _, im, _ in ds["test"]]
    out = [{"method": class_method(args), **class_dice(preds, truths), "train_s": train_s,
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
def run_length(rec: dict) -> str:
    return f"{rec['ft_epochs']} epochs" if rec.get("ft_epochs") else f"{rec.get('budget_s', 150):g} s budget"


def counts(rs: list[dict]) -> list[str]:
    """Ids against true objects per test image, |count error| in %, splits and merges per test image
    (means over runs; records made before these were measured: -)."""
    if any("splits" not in r for r in rs):
        return ["-"] * 4
    return [f"{np.mean([r['n_pred'] for r in rs]):.1f} / {np.mean([r['n_true'] for r in rs]):.1f}",
            f"{100 * np.mean([r['count_error'] for r in rs]):.1f} %",
            f"{np.mean([r['splits'] for r in rs]):.1f}", f"{np.mean([r['merges'] for r in rs]):.1f}"]


def summary(records: list[dict]) -> str:
    def fmt(vals):
        return f"{np.mean(vals):.3f}" + (f" ± {np.std(vals):.3f}" if len(vals) > 1 else "")
    seeds = sorted({r["seed"] for r in records if r["seed"] is not None})
    loads = sorted(float(r["load"]) for r in records if r.get("load"))
    load = f"load average {loads[0]:.1f}-{loads[-1]:.1f} at the end of the runs" if loads else "load not recorded"
    lines = ["## Touching objects and several classes\n",
             (f"Generated by `benchmarks/objects.py` on {stamp()}; {machine()}; {load}. Seeds: "
              f"{', '.join(map(str, seeds))}. Raw records: `docs/data/objects.jsonl`; what the runs show: "
              "[benchmarks/objects_notes.md](../benchmarks/objects_notes.md).\n"),
             "### Instances\n",
             ("Training: 2 images with their instance masks (dense); test: the rest (BBBC007: the first 2 files "
              "sorted, 12 test images; `cells3d` and `cho_3dt`: the first 2 planes of the quality benchmark's "
              "training pool, its test planes). Every method's objects come from its own mask: the U-Net with a "
              "boundary channel by the seeded watershed on its boundary map (*boundary watershed*) or as it "
              "chose on its validation objects (*split as chosen on validation*), every other method by the "
              "distance-transform watershed (`btunet predict --instances`). Every method drops objects below the "
              "size floor a model stores from its training masks (a tenth of the median training object, "
              "at least 15 px; column *floor*; in a 3-D set the voxels it becomes, `instances.volume_floor`). "
              "Means over test images (± std over "
              "seeds); the U-Net's fine-tune length beside its name.\n"),
             ("Counts (`btunet evaluate`, docs/cli.md): *ids / true*, predicted and true objects per test image; "
              "*count error*, |predicted - true| / true; *splits*, true objects that share with 2 or more "
              "predicted ids; *merges*, predicted ids that share with 2 or more true objects (sharing: an overlap "
              "of at least half the smaller object).\n"),
             (f"**Crowded held-out sets** ({', '.join(f'`{n}`' for n in CROWDED)}: bright field and phase contrast, "
              "65-110 objects per image): the first file densely annotated, the other files the test set. They "
              "are reported here and never used to choose a default.\n"),
             (f"**3-D sets** ({', '.join(f'`{n}`' for n in VOLUMES)}): fine-tuned on planes (`cells3d`: z = 34 and "
              "42; CHO: planes 0-2 of frames 0 and 1, whose reference masks hold whole nuclei; planes 3-4 hold "
              "only fragments), each test volume predicted as a Z stack with one id per "
              "object through its planes (`cells3d`: the whole 60-plane volume; CHO: frames 4, 6, ..., 18, each "
              "a (Z, Y, X) volume of its own: ids are never linked over time, tracking is another tool's job), "
              "Z spacing / pixel width "
              + ", ".join(f"{v:.2f} (`{k}`)" for k, v in Z_SPACING.items())
              + "; the baselines' masks are split by the same anisotropic 3-D distance watershed. Scores per "
              "volume.\n")]
    inst = [r for r in records if r["part"] == "instances" and "min_size" in r]
    rows = []
    for ds in dict.fromkeys(r.get("dataset", "bbbc007") for r in inst):
        for key in dict.fromkeys((r["method"], run_length(r) if r["method"].startswith("unet") else "")
                                 for r in inst if r.get("dataset", "bbbc007") == ds):
            rs = [r for r in inst if r.get("dataset", "bbbc007") == ds and r["method"] == key[0]
                  and (not key[1] or run_length(r) == key[1])]
            name = f"{key[0]} ({key[1]})" if key[1] else key[0]
            rows.append([ds, name] + [fmt([r[k] for r in rs]) for k in
                                      ("dice", "object_f1", "ap", "ap50", "mean_matched_iou")]
                        + counts(rs) + [rs[0]["min_size"], f"{np.mean([r['train_s'] for r in rs]):.0f}", len(rs)])
    lines.append(table(["set", "method", "pixel Dice", "object F1@0.5", "AP@0.5:0.95", "AP@0.5", "matched IoU",
                        "ids / true", "count error", "splits", "merges", "floor px", "train s", "runs"], rows,
                       "ll" + "r" * 12))
    chosen = [r for r in inst if r["method"] in (CHOSEN, CHOSEN + TUNED, EARLIER_CHOICE, SIZE_RULE + TUNED)]
    if chosen:
        lines += ["\n### How the model with borders splits objects\n",
                  ("A model fine-tuned with a boundary channel scores its learnt borders and the distance watershed "
                   "on its held-out validation objects (object F1). *Split as the model chose* (the engine's rule, "
                   "`btunet.pipeline.separation`): validation decides when it has at least "
                   f"{MIN_VALIDATION_OBJECTS} objects and one way is ahead by {CLEAR_MARGIN:g} or more, otherwise "
                   f"elongated training objects (median area from {ELONGATED:g} times their inscribed disk: rods) "
                   f"get the borders, and then the median training object decides (from {LARGE_OBJECT_PX} px: the "
                   "borders). *Validation or size*: the rule before shape counted (same models). *Split by "
                   "validation F1 alone* (an earlier rule, same models): the better validation F1, a tie to the "
                   "watershed. Per run: the validation scores, the choice, and the test object F1 each way gives.\n")]
        rows = []
        for r in chosen:
            info = r.get("separation") or {"by": "validation", "f1": {**r["separation_f1"], "objects": "-"}}
            f1 = info["f1"]
            rule = ("F1 alone" if r["method"] == EARLIER_CHOICE else "validation or size"
                    if r["method"].startswith(SIZE_RULE) else "model's rule")
            rows.append([r.get("dataset", "bbbc007"),
                         rule + (" (tuned threshold)" if r["method"].endswith(TUNED) else ""),
                         r["seed"], run_length(r), f1["objects"] if f1 else 0,
                         " / ".join(f"{f1[w]:.3f}" for w in ("boundary", "distance")) if f1 else "-",
                         f"{info.get('median_object_px', '-')}", f"{info.get('median_elongation', '-')}",
                         info["by"], r["separate_by"],
                         " / ".join(f"{r['test_object_f1'][w]:.3f}" for w in ("boundary", "distance")),
                         f"{r['object_f1']:.3f}"])
        lines.append(table(["set", "rule", "seed", "fine-tune", "held-out objects", "validation F1 borders / distance",
                            "median object px", "median elongation", "decided by", "chosen",
                            "test F1 borders / distance", "test F1 chosen"], rows, "llrlrrrrllrr"))
    tuned = [r for r in inst if r["method"].endswith(TUNED)]
    if tuned:
        lines += ["\n### The threshold chosen on validation pixels, and four flips averaged\n",
                  ("Runs with the engine's default threshold (`btunet.pipeline.thresholds`: the best of 0.20-0.80 "
                   "on the held-out validation pixels when it beats 0.5 there by 0.01 Dice). Per run: the threshold "
                   "the model chose, pixel Dice / object F1 at it, at 0.5 where the threshold moved (same model), and "
                   "with four test-time flips averaged (`predict(..., tta=True)`) at the model's threshold.\n")]

        def pair(d):
            return f"{d['dice']:.3f} / {d['object_f1']:.3f}"
        rows = [[r.get("dataset", "bbbc007"), r["method"].replace(TUNED, ""), r["seed"], run_length(r),
                 f"{r['threshold']:g}", pair(r),
                 pair(r["at_configured_threshold"]) if "at_configured_threshold" in r else "(same)",
                 pair(r["with_tta"])] for r in tuned]
        lines.append(table(["set", "method", "seed", "fine-tune", "threshold", "Dice / F1", "at 0.5",
                            "four flips"], rows, "llrlrrrr"))
    lines += ["\n### Three classes from sparse strokes\n",
              (f"Labels built from the BBBC007 masks: nucleus, a {RING}-px ring around each nucleus (the "
               "halo just outside it), background. Strokes: short rows inside each class on the first image "
               "(1 px away from class borders); the U-Net and the random forest (same features as the "
               "quality benchmark) get the same strokes. Dice of each class on the 12 test images.\n")]
    rows = []
    cls = [r for r in records if r["part"] == "classes"]
    for method, ft in dict.fromkeys((r["method"], run_length(r)) for r in cls):
        rs = [r for r in cls if r["method"] == method and run_length(r) == ft]
        name = f"{method} ({ft})" if method.startswith("unet") else method
        rows.append([name, fmt([r["dice_class_1"] for r in rs]), fmt([r["dice_class_2"] for r in rs]),
                     rs[0]["painted_pixels"], f"{np.mean([r['train_s'] for r in rs]):.0f}"])
    lines.append(table(["method", "Dice nucleus", "Dice ring", "painted px", "train s"], rows))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--datasets", nargs="+", default=["bbbc007"], choices=ALL,
                   help="tuning sets (planes), crowded held-out sets, 3-D sets (volumes; objects_sets.py)")
    p.add_argument("--epochs", type=int, default=None, help="fixed fine-tune length (25 steps each)")
    p.add_argument("--seconds", type=float, default=150.0, help="time budget of each fine-tune, without --epochs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--unet", nargs="+", default=["borders", "distance"], choices=("borders", "distance"),
                   help="which U-Nets to run for instances: with a boundary channel, without (default both)")
    p.add_argument("--teacher-features", default="filters", choices=("filters", "encoder"),
                   help="the forest teacher's features in the U-Net's class run (FinetuneConfig.teacher_features)")
    p.add_argument("--pseudo-edge-weight", type=float, default=FinetuneConfig.pseudo_edge_weight,
                   help="how much the classes' fine-tune weighs up its forest's edges "
                        "(FinetuneConfig.pseudo_edge_weight, default %(default)g; 0: flat weights)")
    p.add_argument("--threshold", default="tuned", choices=("tuned", "fixed"),
                   help="the U-Nets' object threshold: tuned on validation pixels (the engine's default, "
                        f"records named '...{TUNED}') or the fixed 0.5 of earlier records")
    p.add_argument("--parts", nargs="+", default=["instances", "classes"], choices=("instances", "classes"))
    p.add_argument("--records", type=Path, default=DOCS / "data" / "objects.jsonl")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    out = args.records
    out.parent.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    ft = {"ft_epochs": args.epochs} if args.epochs else {"budget_s": args.seconds}

    def done(**key) -> bool:  # instance records made before objects had a size floor do not count
        return any(all(r.get(k, "bbbc007" if k == "dataset" else None) == v for k, v in key.items())
                   and (r["part"] != "instances" or "min_size" in r) for r in records)

    def add(rec: dict) -> None:
        rec = {**rec, "load": load_average(), "date": stamp()}
        records.append(rec)
        with out.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)

    for name in args.datasets:
        ds = load(name, args.data)
        base = {"part": "instances", "dataset": name}
        if "instances" in args.parts:
            if not done(**base, method="Otsu + distance watershed"):
                add({**base, "method": "Otsu + distance watershed", "seed": None, **run_otsu(ds)})
            for seed in args.seeds:
                if not done(**base, method="random forest + distance watershed", seed=seed):
                    add({**base, "method": "random forest + distance watershed", "seed": seed,
                         **run_forest(ds, seed)})
                suffix = TUNED if args.threshold == "tuned" else ""
                for method, boundary in ((CHOSEN + suffix, True), ("unet + distance watershed" + suffix, False)):
                    if ("borders" if boundary else "distance") not in args.unet:
                        continue
                    if not done(**base, method=method, seed=seed, **ft):
                        add({**base, "method": method, "seed": seed, **ft, "threads": args.threads,
                             **run_unet(ds, seed, args, boundary)})
        if "classes" in args.parts and name == "bbbc007":
            for seed in args.seeds:
                if not done(part="classes", dataset=name, seed=seed, method=class_method(args), **ft):
                    for rec in run_classes(ds, seed, args):  # the forest's record once per seed
                        if not done(part="classes", dataset=name, seed=seed, method=rec["method"], **ft):
                            add({"part": "classes", "dataset": name, "seed": seed, **ft, "threads": args.threads,
                                 **rec})
    write_section("results_objects.md", summary(records))
    from headlines import update
    update()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
