"""Segmentation quality on real data: BT-Unet (pre-trained / from scratch) against the usual baselines.

For each dataset, U-Net variant, annotation level (1, 2, 4 densely annotated images, or scribbles
on one image) and seed, fine-tune from a Barlow Twins encoder and from scratch, and score Dice/IoU
on held-out images; in the same run, Otsu, a random forest on multiscale features (the ilastik
approach) and a MONAI BasicUNet trained for the same wall time. Every finished run is appended
to a JSON-lines file at once, so a stopped run loses nothing and a rerun continues where it
stopped. Writes docs/results_quality.md, PNG plots in docs/ and regenerates docs/results.md.

    python benchmarks/quality.py --quick          # a few minutes
    python benchmarks/quality.py --full           # the reduced full matrix (see docs/results.md)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import headlines  # noqa: E402
from _report import DEFAULT_DATA, DOCS, ROOT, load_average, machine, stamp, table, write_section  # noqa: E402

from btunet.train.simulate import scribbles  # noqa: E402

LEVELS = ("1", "2", "4", "sparse")
GRAY_UNLABELLED = ("ctc_2d_timelapse.tif", "mahotas_nuclear.png")  # fluorescence, like the sets


# ----------------------------------------------------------------------------------------- data
def norm(image: np.ndarray) -> np.ndarray:
    """Percentile normalisation as in the engine (1 / 99.8 %), for the baselines."""
    from btunet.pipeline.normalize import normalize_plane, percentile_range
    lo, hi = percentile_range(image)
    return normalize_plane(image, lo, hi)


def load_dataset(name: str, data: Path) -> dict:
    """Training pool (in the order images are added), test images and unlabelled extras."""
    import tifffile

    from btunet.io.imageio import read_image
    if name == "bbbc007":
        files = sorted((data / "bbbc007" / "images").iterdir())
        images = [read_image(f) for f in files]
        masks = [read_image(data / "bbbc007" / "masks" / f.name) for f in files]
        names = [f.name for f in files]
        return {"train": list(zip(names[:4], images[:4], masks[:4], strict=True)),
                "test": list(zip(names[4:], images[4:], masks[4:], strict=True)),
                "unlabelled": images,
                "protocol": "first 4 files (sorted) are the training pool (1, 2, 4 = the first k), "
                            "the other 10 are the test set"}
    if name == "cells3d":
        vol = tifffile.imread(data / "cells3d" / "nuclei.tif")
        lab = tifffile.imread(data / "cells3d" / "nuclei_labels.tif")
        test_z = list(range(20, 56, 4))
        train_z = [34, 42, 27, 47]

        def item(z):
            return (f"z{z}", vol[z], lab[z])
        return {"train": [item(z) for z in train_z], "test": [item(z) for z in test_z],
                "unlabelled": [vol],
                "protocol": "2-D planes; training pool z = 34, 42, 27, 47 (in that order), "
                            "test z = 20, 24, ..., 52 (every 4th plane with objects)"}
    if name == "cho_3dt":
        stack = tifffile.imread(data / "cho_3dt" / "stack.tif")[:, 2]
        masks = tifffile.imread(data / "cho_3dt" / "masks.tif")[:, 2]

        def item(t):
            return (f"t{t}", stack[t], masks[t])
        return {"train": [item(t) for t in range(4)], "test": [item(t) for t in range(4, len(stack))],
                "unlabelled": [stack],
                "protocol": "plane z = 2 of each frame; frames 0-3 are the training pool, "
                            "frames 4-19 the test set"}
    if name in FILE_SETS:
        return file_set(name, data)
    if name == "phc_psc_density":
        return density_set(data)
    if name in SINGLE_SETS:
        return single_set(name, data)
    raise SystemExit(f"unknown dataset {name}")


#: sets held out of tuning: one file per frame, other modalities; (painted file, test files)
FILE_SETS = {"phc_psc": (0, slice(5, None, 5)), "bsubtilis_bf": (0, slice(1, None)),
             "mothermachine_phase": (0, slice(1, None))}
#: held-out single images of another microscope, painted and scored on themselves (what a user
#: with one large EM image does); the mask's classes all count as object
SINGLE_SETS = {"fibsem_classes": "image.tif"}
HELD_OUT = (*FILE_SETS, "phc_psc_density", *SINGLE_SETS)


def file_set(name: str, data: Path) -> dict:
    """A folder of one image per file, predicted file by file as a user's folder would be."""
    from btunet.io.imageio import read_image
    files = sorted((data / name / "images").iterdir())
    items = [(f.name, read_image(f), read_image(data / name / "masks" / f.name)) for f in files]
    painted, test = FILE_SETS[name]
    return {"train": [items[painted]], "test": items[test], "unlabelled": [i[1] for i in items],
            "protocol": f"one file per frame; painted: {items[painted][0]}; test: "
                        f"{len(items[test])} files ({items[test][0][0]} ... {items[test][-1][0]}), each read "
                        "and predicted on its own"}


def single_set(name: str, data: Path) -> dict:
    """One image, painted and scored on itself: there is no second image to test on."""
    from btunet.io.imageio import read_image
    fname = SINGLE_SETS[name]
    item = (fname, read_image(data / name / "images" / fname), read_image(data / name / "masks" / fname))
    return {"train": [item], "test": [item], "unlabelled": [item[1]],
            "protocol": f"one image ({fname}), painted and scored on itself; every class of its mask is object"}


def density_set(data: Path, size: int = 192) -> dict:
    """The same cells at two foreground fractions: a crop of the most crowded region of a frame,
    and that crop in the middle of a canvas 4x its area tiled from cell-free background of the
    same frame. A rule that maps the same cells to the same values scores both alike."""
    from scipy import ndimage as ndi
    base = file_set("phc_psc", data)
    test = []
    for fname, image, mask in base["test"][1::2]:
        fg = ndi.uniform_filter((mask > 0).astype(np.float32), size)
        cy, cx = np.unravel_index(np.argmax(fg), fg.shape)
        y0 = int(np.clip(cy - size // 2, 0, image.shape[0] - size))
        x0 = int(np.clip(cx - size // 2, 0, image.shape[1] - size))
        crop, crop_mask = image[y0:y0 + size, x0:x0 + size], mask[y0:y0 + size, x0:x0 + size]
        # the emptiest window of the frame (no cell within 8 px), mirrored into a tile
        near = ndi.binary_dilation(mask > 0, iterations=8).astype(np.float32)
        empty = ndi.uniform_filter(near, size // 2)
        ey, ex = np.unravel_index(np.argmin(empty[size // 4:-size // 4, size // 4:-size // 4]), (
            empty.shape[0] - size // 2, empty.shape[1] - size // 2))
        patch = image[ey:ey + size // 2, ex:ex + size // 2]
        tile = np.block([[patch, patch[:, ::-1]], [patch[::-1], patch[::-1, ::-1]]])
        canvas = np.tile(tile, (2, 2))
        canvas_mask = np.zeros(canvas.shape, mask.dtype)
        o = size // 2
        canvas[o:o + size, o:o + size], canvas_mask[o:o + size, o:o + size] = crop, crop_mask
        test += [(f"{fname} crowded crop", crop, crop_mask), (f"{fname} crop in background", canvas, canvas_mask)]
    return {"train": base["train"], "test": test, "unlabelled": base["unlabelled"],
            "protocol": f"painted: {base['train'][0][0]} (whole frame); test: {len(test) // 2} crowded "
                        f"{size}-px crops of other frames, each alone and inside a canvas 4x its area "
                        "tiled from cell-free background of the same frame"}


def annotations(ds: dict, level: str) -> tuple[list, list, str]:
    """(images, annotations, mask_mode) for an annotation level."""
    if level == "sparse":
        _, image, mask = ds["train"][0]
        return [image], [scribbles(mask)], "sparse"
    k = int(level)
    return ([image for _, image, _ in ds["train"][:k]],
            [(mask > 0).astype(np.uint8) for _, _, mask in ds["train"][:k]], "dense")


def annotated_pixels(labels: list, mode: str) -> int:
    return int(sum(((a > 0) if mode == "sparse" else np.ones_like(a, bool)).sum() for a in labels))


# ------------------------------------------------------------------------------------ scoring
def score(predictions: list[np.ndarray], ds: dict) -> dict:
    from btunet.labels.metrics import pixel_scores
    per = [pixel_scores(p, mask) for p, (_, _, mask) in zip(predictions, ds["test"], strict=True)]
    return {"dice": float(np.mean([s["dice"] for s in per])), "iou": float(np.mean([s["iou"] for s in per]))}


def score_model(model, ds: dict) -> tuple[dict, float]:
    import btunet
    t = time.perf_counter()
    preds = [btunet.predict(model, image, probabilities=False).labels for _, image, _ in ds["test"]]
    return score(preds, ds), time.perf_counter() - t


# ------------------------------------------------------------------------------------ methods
def get_encoder(ds_name: str, ds: dict, variant: str, args, data: Path):
    """Pre-train once per dataset x variant (cached on disk) within a time budget."""
    import btunet
    from btunet.train.pretrain import PretrainedEncoder
    cache = Path(args.cache) / f"{ds_name}_{variant}_{args.pretrain_seconds:g}s.safetensors"
    if cache.exists():
        enc = PretrainedEncoder.load(cache)
        return enc, enc.metadata
    extras = [data / "unlabelled" / f for f in GRAY_UNLABELLED]
    from btunet.io.imageio import read_image
    sources = list(ds["unlabelled"]) + [read_image(p) for p in extras]
    # calibrate the step time so the warm-up + cosine schedule spans the time budget
    n_planes = sum(1 if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4)) else int(np.prod(a.shape[:-2]))
                   for a in sources)
    probe = btunet.PretrainConfig(model=variant, channels=1, epochs=1, batch_size=args.pretrain_batch,
                                  samples_per_epoch=3 * args.pretrain_batch, seed=0)
    ticks: list[float] = []
    btunet.pretrain(sources, probe, on_progress=lambda p: ticks.append(p.elapsed_s),
                    should_stop=lambda: len(ticks) >= 3)
    step_s = (ticks[-1] - ticks[0]) / max(1, len(ticks) - 1)
    steps = max(4, int(args.pretrain_seconds / step_s))
    per_epoch = max(-(-n_planes // args.pretrain_batch), -(-steps // 10))
    cfg = btunet.PretrainConfig(model=variant, channels=1, batch_size=args.pretrain_batch,
                                epochs=max(1, round(steps / per_epoch)),
                                samples_per_epoch=per_epoch * args.pretrain_batch, seed=0)
    start = time.perf_counter()
    limit = 1.5 * args.pretrain_seconds
    enc = btunet.pretrain(sources, cfg, should_stop=lambda: time.perf_counter() - start > limit)
    enc.metadata["bench"] = {"planned_steps": steps, "probe_step_s": round(step_s, 2),
                             "sources": len(sources) - len(extras), "extras": list(GRAY_UNLABELLED),
                             "load": load_average()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    enc.save(cache)
    return enc, enc.metadata


def run_btunet(ds: dict, level: str, variant: str, seed: int, encoder, args,
               encoder_lr_scale: float = 1.0) -> dict:
    import btunet
    images, labels, mode = annotations(ds, level)
    cfg = btunet.FinetuneConfig(model=variant, mask_mode=mode, epochs=args.epochs,
                                steps_per_epoch=args.steps, batch_size=args.batch, seed=seed,
                                time_budget_s=args.finetune_seconds, encoder_lr_scale=encoder_lr_scale)
    t = time.perf_counter()
    model = btunet.finetune(images, labels, cfg, encoder=encoder)
    train_s = time.perf_counter() - t
    scores, pred_s = score_model(model, ds)
    dice_hist = [d for d in model.metadata["val_dice_history"] if d is not None]
    return {**scores, "train_s": train_s, "predict_s": pred_s, "finetune_budget_s": args.finetune_seconds,
            "epochs": model.metadata["epochs"],
            "best_epoch": model.metadata["best_epoch"], "val_dice_final": dice_hist[-1] if dice_hist else None,
            "annotated_pixels": annotated_pixels(labels, mode)}


def run_otsu(ds: dict) -> dict:
    from skimage.filters import threshold_otsu
    t = time.perf_counter()
    preds = []
    for _, image, _ in ds["test"]:
        x = norm(image)
        preds.append(x > threshold_otsu(x))
    return {**score(preds, ds), "train_s": 0.0, "predict_s": time.perf_counter() - t}


def rf_features(image: np.ndarray, fine: bool = False) -> np.ndarray:
    """The baseline forest's features: multiscale filters, sigma 1-16; ``fine``: also the raw pixel and
    ilastik's finest smoothing scales (the engine's ``teacher_features="fine"``)."""
    from skimage.feature import multiscale_basic_features

    from btunet.train.teacher import fine_features
    x = norm(image)
    f = multiscale_basic_features(x, intensity=True, edges=True, texture=True, sigma_min=1, sigma_max=16)
    return np.concatenate([f, fine_features(x[None])], axis=-1) if fine else f


def run_random_forest(ds: dict, level: str, seed: int, max_pixels: int) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    images, labels, mode = annotations(ds, level)
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    xs, ys = [], []
    for image, lab in zip(images, labels, strict=True):
        f = rf_features(image)
        if mode == "sparse":
            keep = lab > 0
            xs.append(f[keep])
            ys.append(lab[keep] == 2)
        else:
            xs.append(f.reshape(-1, f.shape[-1]))
            ys.append(lab.reshape(-1) > 0)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(y) > max_pixels:  # subsample dense annotations (the forest saturates long before)
        pick = rng.choice(len(y), max_pixels, replace=False)
        x, y = x[pick], y[pick]
    clf = RandomForestClassifier(n_estimators=50, max_depth=10, n_jobs=-1, random_state=seed).fit(x, y)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    preds = []
    for _, image, _ in ds["test"]:
        f = rf_features(image)
        preds.append(clf.predict(f.reshape(-1, f.shape[-1])).reshape(image.shape))
    return {**score(preds, ds), "train_s": train_s, "predict_s": time.perf_counter() - t,
            "training_pixels": int(len(y))}


def run_monai(ds: dict, level: str, seed: int, budget_s: float, args) -> dict:
    """MONAI BasicUNet from scratch, same loss, patches, augmentation and fast path, for budget_s."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import BasicUNet

    from btunet.core.config import seed_everything
    from btunet.pipeline.data import load_sources
    from btunet.train.augment import finetune_augment
    from btunet.train.losses import masked_bce_dice_loss
    from btunet.train.training_set import PatchSampler, annotated_planes
    images, labels, mode = annotations(ds, level)
    generator = seed_everything(seed)
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    planes = annotated_planes(load_sources(images), load_sources(labels), 1, mode, 128)
    sampler = PatchSampler(planes, 128, 0.9, rng)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1,
                    features=(16, 32, 64, 128, 256, 16)).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = 0
    while time.perf_counter() - t < budget_s:
        x, tg, w = (torch.from_numpy(a) for a in sampler.batch(args.batch))
        x, tg, w = finetune_augment(x, tg, w, generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x.contiguous(memory_format=torch.channels_last))
        loss = masked_bce_dice_loss(logits, tg, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    train_s = time.perf_counter() - t
    net.eval()
    t = time.perf_counter()
    preds = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for _, image, _ in ds["test"]:
            x = torch.from_numpy(norm(image))[None, None]
            logits = sliding_window_inference(x, (args.monai_roi, args.monai_roi), 4, net, overlap=0.25,
                                                  mode="gaussian")
            preds.append(logits[0, 0].float().numpy() > 0)
    return {**score(preds, ds), "train_s": train_s, "predict_s": time.perf_counter() - t, "steps": steps}


# ------------------------------------------------------------------------------------ report
def mean_std(values: list[float], digits: int = 3) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def method_order(records: list[dict]) -> list[str]:
    found = {r["method"] for r in records}
    order = []
    for r in records:
        if r["method"] not in order and r["method"].startswith("btunet"):
            order.append(r["method"])
    order.sort(key=lambda m: (m.split(":")[1], m.split(":")[2] != "bt"))
    return order + [m for m in ("random_forest", "monai_basicunet", "otsu") if m in found]


LABELS = {"random_forest": "random forest (ilastik-style)", "monai_basicunet": "MONAI BasicUNet, same time",
          "otsu": "Otsu (no training)"}


def label_of(method: str) -> str:
    if method in LABELS:
        return LABELS[method]
    _, variant, init = method.split(":")
    return f"`{variant}` " + ("Barlow Twins" if init == "bt" else "from scratch")


def summary(records: list[dict], args, pretrain_meta: dict, datasets: dict) -> str:
    lines = ["## Quality", "",
             (f"Run {stamp()} on {machine()}; 1-min load average at the end {load_average()} "
              "(each record in the raw file carries the load when it finished; with 2 cores, a load "
              "above ~2.5 means other jobs shared them and times are pessimistic)."), "",
             f"Command: `{args.command_line}`" + (" (tables rebuilt from its records with `--report-only`)"
                                                   if args.report_only else ""), ""]
    lines += ["What was run: " + args.description, ""]
    for ds_name, ds in datasets.items():
        recs = [r for r in records if r["dataset"] == ds_name]
        if not recs:
            continue
        seeds = sorted({r["seed"] for r in recs if r["method"] != "otsu"})
        lines += [f"### {ds_name}", "",
                  (f"Protocol: {ds['protocol']}; {len(ds['test'])} test images; "
                   f"seeds {seeds}. Mean per-image foreground Dice / IoU on the test images, mean ± std "
                   "over seeds; time = training wall time per run (prediction of all test images in "
                   "brackets)."), ""]
        for key, meta in pretrain_meta.items():
            if key.startswith(ds_name + ":"):
                b = meta.get("bench", {})
                lines.append(f"- Barlow Twins pre-training of `{key.split(':')[1]}`: {meta['seconds']} s, "
                             f"{len(meta.get('loss_history', []))} epochs "
                             f"(~{b.get('planned_steps', '?')} steps) of batch "
                             f"{meta['pretrain_config']['batch_size']} x {meta['pretrain_config']['patch_size']}², "
                             f"loss {meta['loss_history'][0]:.1f} -> {meta['loss_history'][-1]:.1f}, on "
                             f"{meta['trained_on']['planes']} unlabelled planes (this set's images, "
                             f"test images included, without labels, plus {', '.join(b.get('extras', []))}); "
                             "done once and reused for every seed and level.")
        lines.append("")
        header = ["method"] + [f"{lv if lv != 'sparse' else 'scribbles'}{'' if lv == 'sparse' else ' img'}: Dice"
                               for lv in LEVELS] + ["IoU (per level)", "time per run"]
        rows = []
        for m in method_order(recs):
            cells, ious, times = [], [], []
            for lv in LEVELS:
                rs = [r for r in recs if r["method"] == m and (r["level"] == lv or m == "otsu")]
                cells.append(mean_std([r["dice"] for r in rs]) if m != "otsu" else f"{rs[0]['dice']:.3f}")
                ious.append(f"{np.mean([r['iou'] for r in rs]):.3f}" if rs else "—")
                if rs and m != "otsu":
                    times.append(f"{lv if lv != 'sparse' else 'scr.'}: {np.mean([r['train_s'] for r in rs]):.0f} s "
                                 f"({np.mean([r['predict_s'] for r in rs]):.0f} s)")
            if m == "otsu":
                times = [f"0 s ({np.mean([r['predict_s'] for r in recs if r['method'] == m]):.1f} s)"]
            rows.append([label_of(m)] + cells + [" / ".join(ious), ", ".join(times) or "—"])
        lines += [table(header, rows, "l" + "r" * (len(header) - 1)), ""]
        px = {lv: next((r["annotated_pixels"] for r in recs if r["level"] == lv and "annotated_pixels" in r), None)
              for lv in LEVELS}
        if any(px.values()):
            lines += ["Annotated pixels per level: " + ", ".join(
                f"{lv if lv != 'sparse' else 'scribbles'}: {v:,}" for lv, v in px.items() if v) + ".", ""]
        else:
            lines += ["Only the Otsu baseline finished for this set before the run was stopped.", ""]
        plot = plot_dataset(ds_name, recs) if any(r["method"] != "otsu" for r in recs) else None
        if plot:
            lines += [f"![Dice against annotations, {ds_name}]({plot.name})", ""]
    lines += ["Notes:", "",
              "- Fine-tuning uses the engine defaults (Adam 1e-3, batch "
              f"{args.batch} x 128², BCE + Dice on annotated pixels, 20 % of annotated 64-px blocks held out "
              "for validation when enough is annotated, reduce-on-plateau, early stopping, best epoch kept, "
              f"bf16 + channels_last) with at most {args.epochs or 'the engine default of'} epochs x {args.steps} steps"
              + (f" and a {args.finetune_seconds:g} s budget per run" if args.finetune_seconds else "") + ".",
              ("- MONAI BasicUNet (features 16-32-64-128-256-16, 1.95 M parameters) is trained from scratch "
               "with the same loss, patch sampler, augmentation and bf16 fast path, for the wall time the "
               "Barlow Twins run of the same dataset, level and seed took; sliding-window prediction "
               f"({args.monai_roi}² windows, the training patch size, overlap 0.25, Gaussian blending; "
               "BasicUNet normalises per instance, so a window much larger than the training patch, or an "
               "image padded with zeros to fill one, shifts its statistics)."),
              (f"- Random forest: `multiscale_basic_features` (intensity, edges, texture, sigma 1-16) + "
               f"`RandomForestClassifier(n_estimators=50, max_depth=10)` on the same annotated pixels "
               f"(dense annotations subsampled to {args.rf_pixels:,} pixels)."),
              "- Otsu needs no annotation: one value per dataset, repeated in every column.",
              ("- Scribbles: on the first training image, a disk (radius <= 5 px) inside each of 10 objects "
               "(label 2) and 8 strokes of 40 x 3 px in background at least 4 px from objects (label 1); "
               "generated with a fixed seed from the ground truth (`scribbles()` in the script)."),
              f"- Raw per-run records: [`{Path(args.records).name}`](data/{Path(args.records).name})."]
    notes = Path(args.notes)
    if args.notes and notes.exists():
        lines += ["", notes.read_text().rstrip()]
    return "\n".join(lines)


def plot_dataset(ds_name: str, recs: list[dict]) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    xs = {lv: i for i, lv in enumerate(LEVELS)}
    for m in method_order(recs):
        if m == "otsu":
            d = [r["dice"] for r in recs if r["method"] == m]
            ax.axhline(np.mean(d), color="gray", ls=":", label=label_of(m).replace("`", ""))
            continue
        pts = []
        for lv in LEVELS:
            d = [r["dice"] for r in recs if r["method"] == m and r["level"] == lv]
            if d:
                pts.append((xs[lv], np.mean(d), np.std(d)))
        if not pts:
            continue
        x, y, e = map(np.array, zip(*pts, strict=True))
        dense = x < 3
        style = "-o" if m.startswith("btunet") and m.endswith(":bt") else "--s" if m.startswith("btunet") else "-.^"
        line = ax.errorbar(x[dense], y[dense], yerr=e[dense], fmt=style, capsize=3,
                           label=label_of(m).replace("`", ""))
        if (~dense).any():
            ax.errorbar(x[~dense], y[~dense], yerr=e[~dense], fmt=style[-1], capsize=3,
                        color=line[0].get_color())
    ax.set_xticks(range(len(LEVELS)), ["1 image", "2 images", "4 images", "scribbles\n(1 image)"])
    ax.set_xlabel("densely annotated training images")
    ax.set_ylabel("mean test Dice")
    ax.set_title(f"{ds_name}: Dice against annotations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = DOCS / f"quality_{ds_name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="BBBC007, unet, seed 0, levels 1 and scribbles, short training (a few minutes)")
    mode.add_argument("--full", action="store_true", help="the reduced full matrix (default)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--datasets", nargs="+", choices=("bbbc007", "cells3d", "cho_3dt"), help="override")
    p.add_argument("--variants", nargs="+", help="override (default: unet)")
    p.add_argument("--levels", nargs="+", choices=LEVELS, help="override")
    p.add_argument("--seeds", type=int, nargs="+", help="override")
    p.add_argument("--epochs", type=int, help="maximum fine-tuning epochs (default: the engine's, "
                   "60 for masks and 12 for strokes; quick 3)")
    p.add_argument("--steps", type=int, help="fine-tuning steps per epoch (default: the engine's, 25; quick 5)")
    p.add_argument("--batch", type=int, help="fine-tuning batch size (default: the engine's, 8)")
    p.add_argument("--finetune-seconds", type=float,
                   help="stop fine-tuning after this many seconds (default: none quick, 150 full)")
    p.add_argument("--pretrain-seconds", type=float, help="Barlow Twins pre-training budget per dataset x variant")
    p.add_argument("--pretrain-batch", type=int, default=16, help="pre-training batch (default 16)")
    p.add_argument("--rf-pixels", type=int, default=200_000, help="max training pixels of the random forest")
    p.add_argument("--monai-roi", type=int, default=128,
                   help="MONAI sliding-window size (default 128, the training patch: BasicUNet's instance "
                        "norm then sees windows like the ones it was trained on)")
    p.add_argument("--records", help="JSON-lines file of finished runs (default docs/data/quality_MODE.jsonl)")
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache"), help="pre-trained encoder cache")
    p.add_argument("--no-baselines", action="store_true", help="skip Otsu, random forest and MONAI")
    p.add_argument("--notes", default=str(ROOT / "benchmarks" / "quality_notes.md"),
                   help="markdown appended to the section (the interpretation of the numbers)")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the records file")
    args = p.parse_args(argv)
    quick = args.quick
    name = "quick" if quick else "full"
    args.datasets = args.datasets or (["bbbc007"] if quick else ["bbbc007", "cho_3dt", "cells3d"])
    args.variants = args.variants or ["unet"]
    args.levels = args.levels or (["1", "sparse"] if quick else list(LEVELS))
    args.seeds = args.seeds or ([0] if quick else [0, 1, 2])
    from btunet.core.config import FinetuneConfig
    engine = FinetuneConfig()
    args.epochs = args.epochs or (3 if quick else None)
    args.steps = args.steps or (5 if quick else engine.steps_per_epoch)
    args.batch = args.batch or engine.batch_size
    args.finetune_seconds = args.finetune_seconds or (None if quick else 150.0)
    args.pretrain_seconds = args.pretrain_seconds or (30.0 if quick else 150.0)
    args.records = args.records or str(DOCS / "data" / f"quality_{name}.jsonl")
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"]
    args.command_line = "python benchmarks/quality.py " + " ".join(given)

    return args


ALL = ("otsu", "bt", "scratch", "rf", "monai")


def plan(args) -> list[tuple[str, int, str, tuple[str, ...]]]:
    """(dataset, seed, level, methods) in priority order, so a stopped run has the most useful part.

    A: every dataset, first seed, levels 2, scribbles, 1 with all methods (BBBC007 first);
    B: the other seeds at levels 1 and scribbles for BT-Unet (both inits) and the random forest;
    C: everything else (level 4, the other seeds at every level, MONAI for the other seeds).
    """
    order = [lv for lv in ("2", "sparse", "1", "4") if lv in args.levels]
    first, rest = args.seeds[0], args.seeds[1:]
    jobs = []
    for ds_name in args.datasets:
        jobs += [(ds_name, first, lv, ALL) for lv in order if lv != "4" or len(order) == 1]
        if ds_name == args.datasets[0]:
            jobs += [(ds_name, s, lv, ("bt", "scratch", "rf")) for s in rest for lv in ("1", "sparse")
                     if lv in order]
    for ds_name in args.datasets:
        jobs += [(ds_name, s, lv, ALL) for s in args.seeds for lv in order]
    seen, out = set(), []
    for job in jobs:
        if job not in seen:
            seen.add(job)
            out.append(job)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    data = Path(args.data)
    if not (data / "bbbc007").is_dir():
        raise SystemExit(f"no data at {data}; pass --data /path/to/shared/data")
    import torch
    torch.set_num_threads(max(1, torch.get_num_threads()))
    records_path = Path(args.records)
    records_path.parent.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.exists() else []
    done = {(r["dataset"], r["method"], r["level"], r["seed"]) for r in records}
    datasets = {name: load_dataset(name, data) for name in args.datasets}
    pretrain_meta: dict = {}
    args.description = (
        f"datasets {', '.join(args.datasets)}; variants {', '.join(args.variants)}; levels "
        f"{', '.join(args.levels)}; seeds {args.seeds}; Barlow Twins pre-training {args.pretrain_seconds:g} s "
        f"per dataset x variant (batch {args.pretrain_batch} x 96², AdamW, warm-up + cosine over the budget); "
        f"fine-tuning up to {args.epochs or 'the default number of'} x {args.steps} steps of batch {args.batch}"
        + (f", stopped after {args.finetune_seconds:g} s" if args.finetune_seconds else "")
        + " (early stopping and best-epoch selection as in the engine). Runs go in priority order "
        "(`plan()` in the script: first seed at levels 2, scribbles, 1 with every method on each dataset, "
        "BBBC007 first; then more seeds at levels 1 and scribbles; then the rest), so a run stopped "
        "early has the most useful part: the tables show exactly what finished (— = not run).")

    def add(rec: dict) -> None:
        rec["load"] = load_average()
        records.append(rec)
        done.add((rec["dataset"], rec["method"], rec["level"], rec["seed"]))
        with records_path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(f"{rec['dataset']:8s} {rec['method']:28s} {rec['level']:6s} seed {rec['seed']}  "
              f"Dice {rec['dice']:.3f}  IoU {rec['iou']:.3f}  train {rec['train_s']:6.1f} s  "
              f"predict {rec['predict_s']:5.1f} s  load {rec['load']}", flush=True)

    def report() -> None:
        write_section("results_quality.md", summary(records, args, pretrain_meta, datasets))
        headlines.update()  # the README's quality headline and the generated tables of the notes

    def unit(ds_name: str, seed: int, level: str, methods: tuple[str, ...]) -> None:
        """All requested methods for one dataset x seed x annotation level (finished ones skipped)."""
        ds = datasets[ds_name]
        if "otsu" in methods and (ds_name, "otsu", "-", 0) not in done:
            add({"dataset": ds_name, "method": "otsu", "level": "-", "seed": 0, **run_otsu(ds)})
        for variant in args.variants:
            for init in ("bt", "scratch"):
                key = (ds_name, f"btunet:{variant}:{init}", level, seed)
                if init not in methods or key in done:
                    continue
                encoder = None
                if init == "bt":
                    encoder, meta = get_encoder(ds_name, ds, variant, args, data)
                    pretrain_meta[f"{ds_name}:{variant}"] = meta
                rec = run_btunet(ds, level, variant, seed, encoder, args)
                if init == "bt":
                    rec["pretrain_budget_s"] = args.pretrain_seconds
                add({"dataset": ds_name, "method": key[1], "level": level, "seed": seed,
                     "variant": variant, "init": init, **rec})
        if "rf" in methods and (ds_name, "random_forest", level, seed) not in done:
            add({"dataset": ds_name, "method": "random_forest", "level": level, "seed": seed,
                 **run_random_forest(ds, level, seed, args.rf_pixels)})
        if "monai" in methods and (ds_name, "monai_basicunet", level, seed) not in done:
            ref = [r["train_s"] for r in records if r["dataset"] == ds_name and r["level"] == level
                   and r["seed"] == seed and r["method"] == f"btunet:{args.variants[0]}:bt"]
            add({"dataset": ds_name, "method": "monai_basicunet", "level": level, "seed": seed,
                 **run_monai(ds, level, seed, ref[0] if ref else 60.0, args)})
        report()

    from btunet.train.pretrain import PretrainedEncoder
    for ds_name in datasets:  # encoders pre-trained by an earlier (stopped) run
        for variant in args.variants:
            f = Path(args.cache) / f"{ds_name}_{variant}_{args.pretrain_seconds:g}s.safetensors"
            if f.exists():
                pretrain_meta[f"{ds_name}:{variant}"] = PretrainedEncoder.load(f).metadata
    if not args.report_only:
        for ds_name, seed, level, methods in plan(args):
            if args.no_baselines:
                methods = tuple(m for m in methods if m in ("bt", "scratch"))
            unit(ds_name, seed, level, methods)
    report()
    print((DOCS / "results_quality.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
