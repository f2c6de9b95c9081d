"""The ``btunet`` command line: the same jobs as the napari widgets, without a display."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from . import __version__
from .config import FinetuneConfig, PretrainConfig
from .device import DEVICES
from .errors import BTUnetError
from .models import MODELS

EPILOG = """examples:
  btunet pretrain unlabelled/ --out encoder.safetensors --epochs 50
  btunet finetune --images train/images --masks train/masks --encoder encoder.safetensors --out model.safetensors
  btunet predict model.safetensors test/images --out predictions/ --instances
  btunet evaluate --pred predictions/ --truth test/masks
  btunet info model.safetensors
"""


class ProgressBar:
    """A tqdm bar fed by the engine's Progress reports."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None  # created at the first report, so errors print alone

    def __call__(self, p) -> None:
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=p.total_steps, desc=self.desc, unit="step", file=sys.stderr,
                            dynamic_ncols=True)
        self.bar.total = p.total_steps
        self.bar.n = p.step
        info = {"epoch": f"{p.epoch}/{p.epochs}", "loss": f"{p.loss:.4f}"}
        if p.val_dice is not None:
            info["val_dice"] = f"{p.val_dice:.3f}"
        self.bar.set_postfix(info, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch (default: one per core; use fewer when other jobs "
                        "share the machine, as oversubscribed cores slow torch down many times)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="compute device (auto: CUDA, then Apple MPS, then CPU)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_threads(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="btunet", description="Self-supervised (Barlow Twins) U-Net segmentation from few annotations.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"btunet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models = ", ".join(MODELS)
    pd, fd = PretrainConfig(), FinetuneConfig()

    p = sub.add_parser("pretrain", help="Barlow Twins pre-training of an encoder on unlabelled images",
                       description="Pre-train a U-Net encoder with Barlow Twins on unlabelled images "
                                   "(files or folders; every plane of a stack is a sample).")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders (tif, png, jpg)")
    p.add_argument("--out", required=True, metavar="FILE", help="encoder checkpoint to write (.safetensors)")
    p.add_argument("--model", default="unet", help=f"variant: {models} (default unet)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=1,
                   help="model input channels; images are converted to it (default 1)")
    p.add_argument("--epochs", type=int, default=pd.epochs, help=f"default {pd.epochs}")
    p.add_argument("--batch-size", type=int, default=pd.batch_size, help=f"default {pd.batch_size}")
    p.add_argument("--patch-size", type=int, default=pd.patch_size, help=f"default {pd.patch_size}")
    p.add_argument("--lr", type=float, default=pd.lr, help=f"peak learning rate (default {pd.lr})")
    p.add_argument("--resume", metavar="FILE", help="continue from this encoder checkpoint")
    _add_device(p)

    f = sub.add_parser("finetune", help="train a segmentation model on annotated images",
                       description="Fine-tune a U-Net variant on masks (paired with images by file name).")
    f.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders")
    f.add_argument("--masks", nargs="+", required=True, metavar="PATH",
                   help="mask files or folders; a mask pairs with the image of the same name")
    f.add_argument("--out", required=True, metavar="FILE", help="model checkpoint to write (.safetensors)")
    f.add_argument("--model", help=f"variant: {models} (default: the encoder's, else unet)")
    f.add_argument("--encoder", metavar="FILE", help="pre-trained encoder from `btunet pretrain`")
    f.add_argument("--mask-mode", choices=("dense", "sparse"), default=None,
                   help="dense: 0 = background, >0 = object; sparse: 0 = ignore, 1 = background, "
                        "2 = object (default dense; with --init, the mode the model was trained with)")
    f.add_argument("--init", metavar="MODEL",
                   help="continue from this fine-tuned model (variant and channels taken from it) with the "
                        "short continuation schedule; the output is a new file")
    f.add_argument("--epochs", type=int, default=None,
                   help="maximum epochs (default: 60 dense, 12 sparse, "
                        f"{fd.continue_epochs} when continuing with --init)")
    f.add_argument("--steps-per-epoch", type=int, default=fd.steps_per_epoch, help=f"default {fd.steps_per_epoch}")
    f.add_argument("--batch-size", type=int, default=fd.batch_size, help=f"default {fd.batch_size}")
    f.add_argument("--patch-size", type=int, default=fd.patch_size, help=f"default {fd.patch_size}")
    f.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this many seconds")
    f.add_argument("--intensity-augment", type=float, default=fd.intensity_augment, metavar="STRENGTH",
                   help="gamma/contrast/brightness jitter, 0-1 (default 0: off, because jitter shifts the "
                        "intensity at which masks were drawn; raise it when test images vary in brightness "
                        "more than percentile normalisation evens out)")
    f.add_argument("--encoder-lr-scale", type=float, default=fd.encoder_lr_scale, metavar="FACTOR",
                   help="learning rate of the pre-trained encoder relative to the rest (default "
                        f"{fd.encoder_lr_scale:g}; 0 keeps the encoder frozen)")
    _add_device(f)

    r = sub.add_parser("predict", help="segment images and stacks with a fine-tuned model",
                       description="Write one label image per input, with the input's name, into DIR.")
    r.add_argument("model", metavar="MODEL", help="model checkpoint from `btunet finetune`")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder")
    r.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    r.add_argument("--instances", action="store_true",
                   help="label separate objects (connected components, touching ones split by watershed)")
    r.add_argument("--probabilities", action="store_true", help="also write NAME_prob.tif (float32)")
    r.add_argument("--uncertainty", action="store_true",
                   help="also write NAME_uncertainty.tif (float32, 0 = certain, 1 = a coin toss; from four "
                        "test-time flips, 4x the time): where to paint next")
    r.add_argument("--exact", action="store_true", help="fp32 instead of the bf16 fast path")
    r.add_argument("--overwrite", action="store_true", help="replace existing output files")
    r.add_argument("--device", choices=DEVICES, default="auto", help="compute device (default auto)")
    _add_threads(r)
    from .chunked import add_arguments as add_chunked_arguments
    add_chunked_arguments(r)  # --zarr, --scheduler, --chunk, --depth

    e = sub.add_parser("evaluate", help="score predicted label images against ground truth",
                       description="Pair files by name; print per-image and mean Dice, IoU, precision, recall.")
    e.add_argument("--pred", required=True, metavar="DIR", help="predicted label images")
    e.add_argument("--truth", required=True, metavar="DIR", help="ground-truth label images")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    i = sub.add_parser("info", help="print a checkpoint's metadata",
                       description="Print what a checkpoint holds: variant, channels, training provenance.")
    i.add_argument("file", metavar="FILE")

    from .export import add_export_command
    add_export_command(sub)
    return parser


def cmd_pretrain(a) -> None:
    from .pretrain import pretrain
    cfg = PretrainConfig(model=a.model, channels=a.channels, epochs=a.epochs, batch_size=a.batch_size,
                         patch_size=a.patch_size, lr=a.lr, device=a.device, seed=a.seed)
    _check_model(a.model)
    from .distributed import is_main_process
    main_process = is_main_process()  # under torchrun only rank 0 shows progress and writes
    bar = ProgressBar("pretrain") if main_process else None
    try:
        encoder = pretrain(a.images, cfg, on_progress=bar, resume=a.resume)
    finally:
        if bar is not None:
            bar.close()
    if not main_process:
        return
    path = encoder.save(a.out)
    print(f"saved encoder ({encoder.variant}, {encoder.channels} channel(s), "
          f"final loss {encoder.metadata['loss_history'][-1]:.2f}) to {path}")


def cmd_finetune(a) -> None:
    from .checkpoint import save_model
    from .finetune import finetune
    from .imageio import list_images, pair_by_name
    from .pretrain import PretrainedEncoder
    if a.init and a.encoder:
        raise BTUnetError("--init continues a fine-tuned model and --encoder starts a new one; give one of them")
    init = _load_init(a.init) if a.init else None
    encoder = PretrainedEncoder.load(a.encoder) if a.encoder else None
    model = init.name if init is not None else a.model or (encoder.variant if encoder else "unet")
    if init is not None and a.model and a.model != init.name:
        raise BTUnetError(f"--init holds a {init.name!r} model but --model {a.model!r} was given; drop --model")
    _check_model(model)
    _check_output(a.out, [a.init, a.encoder])
    pairs = pair_by_name(list_images(a.images), list_images(a.masks))
    mask_mode = a.mask_mode or (init.metadata.get("trained_on", {}).get("mask_mode") if init is not None
                                else None) or "dense"
    cfg = FinetuneConfig(model=model, mask_mode=mask_mode, epochs=a.epochs, steps_per_epoch=a.steps_per_epoch,
                         batch_size=a.batch_size, patch_size=a.patch_size, time_budget_s=a.time_budget,
                         intensity_augment=a.intensity_augment, encoder_lr_scale=a.encoder_lr_scale,
                         device=a.device, seed=a.seed)
    if init is not None:
        cfg = cfg.continuation()
        if a.epochs is not None:
            cfg.epochs = a.epochs
    bar = ProgressBar("finetune")
    try:
        net = finetune([i for i, _ in pairs], [m for _, m in pairs], cfg, encoder=encoder, on_progress=bar,
                       model=init)
    finally:
        bar.close()
    path = save_model(net, a.out)
    meta = net.metadata
    dice = [d for d in meta["val_dice_history"] if d is not None]
    print(f"saved {model} model to {path} (epochs {meta['epochs']}, best {meta['best_epoch']}"
          + (f", validation Dice {dice[meta['best_epoch'] - 1]:.3f}" if dice else "") + ")")


def cmd_predict(a) -> None:
    from .chunked import run_cli, wants_chunked
    if wants_chunked(a):  # zarr / OME-Zarr inputs, --zarr or --scheduler: block-wise with dask
        if a.uncertainty:
            raise BTUnetError("--uncertainty works on TIFF/PNG inputs, not with zarr, --zarr or --scheduler")
        return run_cli(a)
    import numpy as np

    from .checkpoint import load_model
    from .device import resolve_device
    from .imageio import list_images, read_lazy, write_image_atomic, write_labels
    from .predict import predict, predict_to_tiff
    from tqdm import tqdm
    model = load_model(a.model, resolve_device(a.device))
    inputs = list_images(a.inputs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / p.name for p in inputs]
    extras = [out / f"{p.stem}_{kind}.tif" for p in inputs for kind, wanted in
              (("prob", a.probabilities), ("uncertainty", a.uncertainty)) if wanted]
    existing = [t.name for t in targets + extras if t.exists() or t.with_suffix(".png").exists()]
    if existing and not a.overwrite:
        raise BTUnetError(f"{out} already holds {', '.join(existing[:3])}; use --overwrite or another --out")
    failed = []
    bar = tqdm(total=len(inputs), desc="predict", unit="image", file=sys.stderr)

    def show_planes(done: int, n: int) -> None:  # stacks: which plane of the current image
        if n > 1:
            bar.set_postfix_str(f"plane {done}/{n}")

    for path, target in zip(inputs, targets):
        try:
            image = read_lazy(path)
        except BTUnetError as exc:
            warnings.warn(f"skipping {path.name}: {exc}")
            failed.append(path.name)
            bar.update(1)
            continue
        options = dict(threshold=a.threshold, instances=a.instances, device=a.device, fast=not a.exact,
                       on_progress=show_planes)
        prob_path = out / f"{path.stem}_prob.tif" if a.probabilities else None
        doubt_path = out / f"{path.stem}_uncertainty.tif" if a.uncertainty else None
        try:
            if target.suffix.lower() in (".tif", ".tiff"):  # streamed: memory stays one plane
                predict_to_tiff(model, image, target, prob_path, uncertainty_path=doubt_path, **options)
            else:
                result = predict(model, image, probabilities=a.probabilities, uncertainty=a.uncertainty,
                                 **options)
                write_labels(target, result.labels)
                if prob_path is not None:
                    write_image_atomic(prob_path, result.probabilities.astype(np.float32))
                if doubt_path is not None:
                    write_image_atomic(doubt_path, result.uncertainty)
        finally:
            if hasattr(image, "close"):
                image.close()
        bar.update(1)
    bar.close()
    print(f"wrote {len(inputs) - len(failed)} label image(s) to {out}"
          + (f"; could not read: {', '.join(failed)}" if failed else ""))


def cmd_evaluate(a) -> None:
    from .imageio import list_images, pair_by_name, read_image
    from .metrics import evaluate, mean_scores
    truths = list_images([a.truth])
    preds = [p for p in list_images([a.pred]) if not p.stem.endswith(("_prob", "_uncertainty"))]
    pairs = pair_by_name(truths, preds)
    rows = [{"name": t.name, **evaluate(read_image(p), read_image(t), objects=True)} for t, p in pairs]
    mean = mean_scores([{k: v for k, v in r.items() if k != "name"} for r in rows])
    if a.json:
        print(json.dumps({"images": rows, "mean": mean}, indent=1))
        return
    keys = list(mean)
    width = max(len(r["name"]) for r in rows + [{"name": "mean"}])
    print(f"{'image':<{width}}  " + "  ".join(f"{k:>9}" for k in keys))
    for r in rows + [{"name": "mean", **mean}]:
        print(f"{r['name']:<{width}}  " + "  ".join(f"{r[k]:9.4f}" for k in keys))


def cmd_info(a) -> None:
    from .checkpoint import read_metadata
    print(json.dumps(read_metadata(a.file), indent=1))


def cmd_export(a) -> None:
    from .export import cmd_export as run  # the command and its arguments live in export.py
    run(a)


def _load_init(path: str):
    """The fine-tuned model that ``--init`` continues; a pre-trained encoder is refused with a hint."""
    from .checkpoint import load_model, read_metadata
    if read_metadata(path).get("kind") == "encoder":
        raise BTUnetError(f"{path} is a pre-trained encoder, not a fine-tuned model; "
                          "start from it with --encoder instead of --init")
    return load_model(path)


def _check_output(out: str, inputs: list) -> None:
    """Refuse an output that is a folder or one of the inputs, before any training."""
    target = Path(out)
    if target.is_dir():
        raise BTUnetError(f"--out {out} is a folder; give a file name such as {target / 'model.safetensors'}")
    for given in inputs:
        if given and target.resolve() == Path(given).resolve():
            raise BTUnetError(f"--out {out} is also an input; write the new model to another file")


def _check_model(name: str) -> None:
    if name not in MODELS:
        raise BTUnetError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")


COMMANDS = {"pretrain": cmd_pretrain, "finetune": cmd_finetune, "predict": cmd_predict,
            "evaluate": cmd_evaluate, "info": cmd_info, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda msg, *rest, **kw: f"btunet: warning: {msg}\n"
    try:
        if getattr(args, "threads", None) is not None:
            if args.threads < 1:
                raise BTUnetError(f"--threads must be at least 1, got {args.threads}")
            import torch
            torch.set_num_threads(args.threads)
        COMMANDS[args.command](args)
    except (BTUnetError, FileNotFoundError, PermissionError) as exc:
        print(f"btunet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("btunet: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
