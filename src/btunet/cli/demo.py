"""Headless demo of the painting loop on the shipped BBBC007 sample.

Strokes on one image -> fine-tune with a preview -> one round of corrections where the preview
is wrong -> continue -> predict the other images, with a Dice line at each step (and the
random forest, what ilastik would do with the same strokes, beside it). Run with
``python -m btunet.cli.demo`` (or ``make demo``); pre-training is shown with ``--pretrain-epochs``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..io.sample import sample_paths


def forest_dice(image, strokes, tests, test_features) -> float:
    """Dice on ``tests`` of a random forest on multiscale features trained on the same strokes."""
    from ..labels.metrics import pixel_scores
    from ..train.teacher import fit_forest, pixel_features
    forest = fit_forest([pixel_features(normalized(image))], [(strokes == 2).astype(np.float32)], [strokes > 0])
    return float(np.mean([pixel_scores(forest.predict(f.reshape(-1, f.shape[-1])).reshape(t.shape), t)["dice"]
                          for f, (_, t) in zip(test_features, tests, strict=True)]))


def normalized(image: np.ndarray) -> np.ndarray:
    from ..pipeline.normalize import normalize_plane, percentile_range
    return normalize_plane(image, *percentile_range(image))[None]


def main(argv: list[str] | None = None) -> dict:
    from ..core.checkpoint import save_model
    from ..core.config import FinetuneConfig, PretrainConfig
    from ..infer.predict import predict
    from ..io.imageio import read_image
    from ..labels.metrics import evaluate, mean_scores
    from ..train.finetune import finetune
    from ..train.pretrain import pretrain
    from ..train.simulate import correct, scribbles
    from .commands import ProgressBar

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="folder for the model (default demo_output)")
    parser.add_argument("--pretrain-epochs", type=int, default=0,
                        help="Barlow Twins pre-training epochs on all 14 images first (default 0: skip)")
    parser.add_argument("--budget", type=int, default=300, help="pixels painted in the correction round")
    parser.add_argument("--model", default="unet")
    args = parser.parse_args(argv)
    out = Path(args.out)
    paths, mask_paths = sample_paths()
    image, truth = read_image(paths[0]), read_image(mask_paths[0])
    tests = [(read_image(p), read_image(m)) for p, m in zip(paths[1:], mask_paths[1:], strict=True)]

    def test_dice(net) -> float:
        return float(np.mean([evaluate(predict(net, im, probabilities=False).labels, t)["dice"]
                              for im, t in tests]))

    print(f"BBBC007 sample: strokes on {paths[0].name}, tested on the other {len(tests)} images.")
    from ..train.teacher import pixel_features
    test_features = [pixel_features(normalized(im)) for im, _ in tests]
    t0 = time.perf_counter()
    encoder = None
    if args.pretrain_epochs:
        bar = ProgressBar("pretrain")
        encoder = pretrain(paths, PretrainConfig(model=args.model, epochs=args.pretrain_epochs), on_progress=bar)
        bar.close()

    strokes = scribbles(truth, seed=0)
    cfg = FinetuneConfig(model=args.model)
    bar = ProgressBar("fine-tune on strokes")
    t1 = time.perf_counter()
    model = finetune(image, strokes, cfg, encoder=encoder, on_progress=bar)
    bar.close()
    preview = predict(model, image, probabilities=False, uncertainty=True)
    lines = [("strokes", int((strokes > 0).sum()), time.perf_counter() - t1,
              evaluate(preview.labels, truth)["dice"], test_dice(model),
              forest_dice(image, strokes, tests, test_features))]
    print(f"round 0: {lines[0][1]} painted pixels, preview Dice {lines[0][3]:.3f}; uncertainty above 0.5 on "
          f"{(preview.uncertainty > 0.5).mean():.1%} of the image (where to paint next)")

    corrected = correct(strokes, preview.labels, truth, budget=args.budget)
    bar = ProgressBar("continue after corrections")
    t2 = time.perf_counter()
    model = finetune(image, corrected, cfg.continuation(), model=model, on_progress=bar)
    bar.close()
    preview = predict(model, image, probabilities=False)
    lines.append(("+ 1 correction round", int((corrected > 0).sum()), time.perf_counter() - t2,
                  evaluate(preview.labels, truth)["dice"], test_dice(model),
                  forest_dice(image, corrected, tests, test_features)))
    path = save_model(model, out / "model.safetensors")

    t3 = time.perf_counter()
    rows = [evaluate(predict(model, im, instances=True).labels, t, objects=True) for im, t in tests]
    mean = mean_scores(rows)
    print(f"\n{'step':<22} {'painted px':>10} {'train s':>8} {'preview Dice':>13} {'test Dice':>10} {'forest':>8}")
    for name, px, secs, prev, test, rf in lines:
        print(f"{name:<22} {px:>10} {secs:>8.0f} {prev:>13.3f} {test:>10.3f} {rf:>8.3f}")
    print(f"\npredict {len(tests)} images: Dice {mean['dice']:.3f}, IoU {mean['iou']:.3f}, object F1 "
          f"{mean['object_f1']:.3f} ({time.perf_counter() - t3:.0f} s); total {time.perf_counter() - t0:.0f} s; "
          f"model in {path}")
    return {"rounds": lines, "mean": mean}


if __name__ == "__main__":
    main()
