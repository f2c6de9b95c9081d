"""Headless demo on the shipped BBBC007 sample: pre-train -> fine-tune on 2 images -> predict -> evaluate.

Run with ``python -m btunet.demo`` (or ``make demo``); prints a Dice table against Otsu thresholding.
"""
from __future__ import annotations

import argparse
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

SAMPLE = files("btunet") / "data" / "bbbc007"


def sample_paths() -> tuple[list[Path], list[Path]]:
    """The shipped BBBC007 images and masks, sorted by name."""
    images = sorted(Path(str(SAMPLE / "images")).glob("*.tif"))
    return images, [Path(str(SAMPLE / "masks")) / p.name for p in images]


def otsu(image: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu
    return image > threshold_otsu(image)


def main(argv: list[str] | None = None) -> dict:
    from . import FinetuneConfig, PretrainConfig, evaluate, finetune, predict, pretrain, save_model
    from .cli import ProgressBar
    from .imageio import read_image
    from .metrics import mean_scores

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_output", help="folder for the checkpoints (default demo_output)")
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--finetune-epochs", type=int, default=40)
    parser.add_argument("--model", default="unet")
    args = parser.parse_args(argv)
    out = Path(args.out)
    images, masks = sample_paths()
    train, test = slice(0, 2), slice(2, None)
    print(f"BBBC007 sample: {len(images)} images; pre-training on all of them without labels, "
          f"fine-tuning on {images[0].name} and {images[1].name}, testing on the other {len(images) - 2}.")

    t0 = time.perf_counter()
    bar = ProgressBar("pretrain")
    encoder = pretrain(images, PretrainConfig(model=args.model, epochs=args.pretrain_epochs), on_progress=bar)
    bar.close()
    encoder.save(out / "encoder.safetensors")
    t1 = time.perf_counter()
    bar = ProgressBar("finetune")
    model = finetune(images[train], masks[train], FinetuneConfig(model=args.model, mask_mode="dense",
                     epochs=args.finetune_epochs), encoder=encoder, on_progress=bar)
    bar.close()
    save_model(model, out / "model.safetensors")
    t2 = time.perf_counter()

    rows = []
    for image_path, mask_path in zip(images[test], masks[test]):
        image, truth = read_image(image_path), read_image(mask_path)
        ours = evaluate(predict(model, image, instances=True).labels, truth, objects=True)
        base = evaluate(otsu(image), truth)
        rows.append((image_path.name, ours, base))
    t3 = time.perf_counter()

    print(f"\n{'image':<24} {'Dice':>7} {'IoU':>7} {'obj F1':>7} {'Otsu Dice':>10}")
    for name, ours, base in rows:
        print(f"{name:<24} {ours['dice']:7.4f} {ours['iou']:7.4f} {ours['object_f1']:7.4f} {base['dice']:10.4f}")
    mean = mean_scores([r[1] for r in rows])
    otsu_mean = mean_scores([r[2] for r in rows])
    print(f"{'mean':<24} {mean['dice']:7.4f} {mean['iou']:7.4f} {mean['object_f1']:7.4f} {otsu_mean['dice']:10.4f}")
    print(f"\ntime: pre-train {t1 - t0:.0f} s, fine-tune {t2 - t1:.0f} s, predict+evaluate {t3 - t2:.0f} s; "
          f"checkpoints in {out}/")
    return {"mean": mean, "otsu": otsu_mean}


if __name__ == "__main__":
    main()
