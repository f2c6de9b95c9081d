"""The ``btunet`` argument parser, and the checks of its numbers before any work starts."""
from __future__ import annotations

import argparse
import math
import sys

from . import __version__
from .config import FinetuneConfig, PretrainConfig
from .device import DEVICES
from .errors import BTUnetError
from .metadata import NORMALIZATION_METHODS
from .models import MODELS

EPILOG = """examples:
  btunet pretrain unlabelled/ --out encoder.safetensors --epochs 50
  btunet finetune --images train/images --masks train/masks --encoder encoder.safetensors --out model.safetensors
  btunet predict model.safetensors test/images --out predictions/ --instances
  btunet predict model.safetensors timelapse.tif --out predictions/ --axes TZYX
  btunet evaluate --pred predictions/ --truth test/masks
  btunet info model.safetensors

exit status: 0 done, 2 bad input or nothing could be done (one line on stderr), 130 interrupted
"""

# option -> (smallest allowed, whether the smallest itself is allowed); whole numbers are ints
LIMITS = {"epochs": (1, True), "batch_size": (1, True), "patch_size": (16, True), "steps_per_epoch": (1, True),
          "lr": (0, False), "time_budget": (0, False), "threads": (1, True), "chunk": (16, True),
          "depth": (0, True), "threshold": (0, True), "intensity_augment": (0, True),
          "encoder_lr_scale": (0, True), "dense_weight": (0, True), "edge_weight": (0, True),
          "view_intensity": (0, True), "view_blur": (0, True), "weight_average": (0, True)}
AT_MOST = {"threshold": 1, "intensity_augment": 1, "view_intensity": 2, "view_blur": 2, "weight_average": 0.999}


class Parser(argparse.ArgumentParser):
    """Usage mistakes are one line (``btunet: error: ...``) and exit status 2, like other bad input."""

    def error(self, message: str):
        self.exit(2, f"btunet: error: {message} (see {self.prog} --help)\n")


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse zero, negative, NaN and infinite settings up front, with the option's name."""
    for name, (low, inclusive) in LIMITS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        option = "--" + name.replace("_", "-")
        high = AT_MOST.get(name, math.inf)
        ok = math.isfinite(value) and (value >= low if inclusive else value > low) and value <= high
        if not ok:
            if name in AT_MOST:
                need = f"between {low} and {high}"
            elif isinstance(value, int):
                need = f"at least {low}"
            else:
                need = f"a number {'>=' if inclusive else '>'} {low}"
            raise BTUnetError(f"{option} must be {need}, got {value}")
    check_axes_option(args)
    if getattr(args, "chunk", None) is not None and args.depth > args.chunk:
        raise BTUnetError(f"--depth ({args.depth}) must not exceed --chunk ({args.chunk}): a block cannot "
                          "be thinner than its overlap")


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch and ONNX Runtime (default: one per core that other "
                        "processes leave free, measured at the start; oversubscribed cores slow torch "
                        "down many times)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="compute device (auto: CUDA, then Apple MPS, then CPU)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_threads(p)


def _add_model_output(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", required=True, metavar="FILE", help=f"{what} checkpoint to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")


def _add_chunked(parser: argparse.ArgumentParser) -> None:
    """The ``btunet predict`` options for chunked (zarr, cluster) prediction."""
    from .chunked import DEFAULT_CHUNK, DEFAULT_DEPTH
    parser.add_argument("--zarr", action="store_true",
                        help="write zarr arrays (NAME.zarr, NAME_prob.zarr) and predict block by block; "
                             "zarr / OME-Zarr inputs always are. Block-wise prediction writes masks and "
                             "probabilities, no instances (label the mask afterwards, per plane or in 3-D)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="dask.distributed scheduler to run the blocks on (default: local threads)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                        help=f"block side in pixels for chunked prediction (default {DEFAULT_CHUNK})")
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH,
                        help=f"overlap between blocks in pixels (default {DEFAULT_DEPTH})")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="btunet", description="Self-supervised (Barlow Twins) U-Net segmentation from few annotations.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"btunet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    models = ", ".join(MODELS)
    pd, fd = PretrainConfig(), FinetuneConfig()

    p = sub.add_parser("pretrain", help="Barlow Twins pre-training of an encoder on unlabelled images",
                       description="Pre-train a U-Net encoder with Barlow Twins on unlabelled images "
                                   "(files or folders; every plane of a stack is a sample). The first "
                                   "Ctrl-C (or SIGTERM) stops after the current step and saves the "
                                   "encoder; a second one aborts without saving.")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders (tif, png, jpg)")
    _add_model_output(p, "encoder")
    p.add_argument("--model", default="unet", help=f"variant: {models} (default unet)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=1,
                   help="model input channels; images are converted to it (default 1)")
    p.add_argument("--epochs", type=int, default=pd.epochs, help=f"default {pd.epochs}")
    p.add_argument("--batch-size", type=int, default=pd.batch_size, help=f"default {pd.batch_size}")
    p.add_argument("--patch-size", type=int, default=pd.patch_size, help=f"default {pd.patch_size}")
    p.add_argument("--lr", type=float, default=pd.lr, help=f"peak learning rate (default {pd.lr})")
    p.add_argument("--view-intensity", type=float, default=pd.view_intensity, metavar="S",
                   help="how far the two views' gamma, contrast and brightness differ (0-2, default "
                        f"{pd.view_intensity:g}); the encoder learns to ignore what differs, so a lower "
                        "value keeps intensity levels in its features")
    p.add_argument("--view-blur", type=float, default=pd.view_blur, metavar="S",
                   help=f"how strongly the views are blurred (0-2, default {pd.view_blur:g}: sigma up to 1.5 px); "
                        "0 keeps sharpness in the features (in-focus objects told from out-of-focus haze)")
    p.add_argument("--dense-weight", type=float, default=pd.dense_weight, metavar="W",
                   help="add W x a dense Barlow Twins loss on the points both views share, read from "
                        f"the 1/4-resolution skip (segmentation is dense); default {pd.dense_weight:g}: "
                        "the pooled (global) loss only. One process only; resuming restarts its projector")
    p.add_argument("--resume", metavar="FILE", help="continue from this encoder checkpoint")
    _add_axes(p, "images")
    _add_device(p)

    f = sub.add_parser("finetune", help="train a segmentation model on annotated images",
                       description="Fine-tune a U-Net variant on masks (paired with images by file name). "
                                   "The first Ctrl-C (or SIGTERM) stops after the current step and saves "
                                   "the best model so far; a second one aborts without saving.")
    f.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders")
    f.add_argument("--masks", nargs="+", required=True, metavar="PATH",
                   help="mask files or folders; a mask pairs with the image of the same name")
    _add_model_output(f, "model")
    f.add_argument("--model", help=f"variant: {models} (default: the encoder's, else unet)")
    f.add_argument("--encoder", metavar="FILE",
                   help="pre-trained encoder from `btunet pretrain`, or 'builtin': the unet encoder shipped "
                        "with btunet (Barlow Twins on public unlabelled nuclei and cell images; `btunet info "
                        "builtin` says which)")
    f.add_argument("--mask-mode", choices=("dense", "sparse", "classes"), default=None,
                   help="dense: 0 = background, >0 = object (instance ids also teach where touching objects "
                        "meet); sparse: 0 = ignore, 1 = background, 2 = object (2..K+1 = K classes); classes: "
                        "0 = background, k = class k (default dense; with --init, the mode the model was "
                        "trained with)")
    f.add_argument("--class-names", metavar="NAMES",
                   help="comma-separated names of classes 1..K, e.g. nuclei,ring (K defaults to the labels': "
                        "max label - 1 sparse, max id with --mask-mode classes)")
    f.add_argument("--boundary", action="store_true",
                   help="also learn object borders, used by `btunet predict --instances` to separate "
                        "touching objects: from instance masks (dense masks with several ids) or from "
                        "background strokes painted between two objects (sparse). With instance masks, "
                        "the learnt borders and a distance watershed are scored on the validation "
                        "objects and the better is stored with the model (separate_by)")
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
    f.add_argument("--normalization", choices=NORMALIZATION_METHODS, default=fd.normalization,
                   help="how intensities are mapped before the network, saved with the model and used by "
                        "predict: percentile (1st and 99.8th percentiles of each image or stack to 0 and 1) or "
                        "background (its background peak to 0, its 99.8th percentile to 1: files where objects "
                        "cover more or less of the field keep the same values; not for bioimage.io export) "
                        f"(default {fd.normalization}; --init keeps the model's own)")
    f.add_argument("--encoder-lr-scale", type=float, default=fd.encoder_lr_scale, metavar="FACTOR",
                   help="learning rate of the pre-trained encoder relative to the rest (default "
                        f"{fd.encoder_lr_scale:g}; 0 keeps the encoder frozen)")
    f.add_argument("--teacher-features", choices=("filters", "encoder"), default=fd.teacher_features,
                   help="sparse strokes: the features of the random forest whose confident guesses label "
                        "the unpainted pixels: multiscale filters, or the filters and the maps of the "
                        "encoder the run starts from (--encoder), else of the built-in encoder "
                        f"(default {fd.teacher_features})")
    f.add_argument("--edge-weight", type=float, default=fd.pseudo_edge_weight, metavar="W",
                   help="sparse strokes, a fresh run: the forest's pseudo-labels weigh up to 1 + W times more "
                        "at its object edges, which no stroke marks, so objects do not come out a pixel too "
                        f"fat (0: flat weights; default {fd.pseudo_edge_weight:g})")
    f.add_argument("--weight-average", type=float, default=fd.weight_average, metavar="DECAY",
                   help="keep a moving average of the weights (share DECAY of the old average at each step, "
                        "e.g. 0.97) and use it for the progress preview and the saved model, which then swing "
                        f"less from epoch to epoch (0: the last weights; default {fd.weight_average:g})")
    f.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="probability threshold saved with the model (default: with dense masks, the one "
                        "with the best Dice on the held-out validation pixels when it beats 0.5 clearly "
                        "there, else 0.5; with --init, the model's own)")
    _add_axes(f, "images (masks have the same axes without C)")
    _add_device(f)

    r = sub.add_parser("predict", help="segment images and stacks with a fine-tuned model",
                       description="Write one label image per input, with the input's name, into DIR. "
                                   "Inputs that cannot be read are skipped with a warning.")
    r.add_argument("model", metavar="MODEL", help="model checkpoint from `btunet finetune`")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder")
    r.add_argument("--threshold", type=float, default=None,
                   help="probability threshold (default: the one saved with the model, usually 0.5)")
    r.add_argument("--instances", action="store_true",
                   help="label separate objects: touching ones are split as the model chose on its "
                        "validation objects (its learnt borders or a distance-transform watershed; see "
                        "--separate-by), else by the watershed. A stack with a Z axis "
                        "(--axes, the file's own axes, or a 3-D stack taken as Z, Y, X) is labelled in "
                        "3-D: an object keeps one id through its planes (the stack's probabilities are "
                        "held in memory); T is never linked, and an unnamed 4-D stack goes plane by "
                        "plane. Not with --zarr/--scheduler (block-wise "
                        "prediction writes masks only)")
    r.add_argument("--per-plane", action="store_true",
                   help="with --instances: label every plane on its own (ids are still unique in the "
                        "stack but not linked across planes), e.g. for a T, Y, X movie without --axes TYX")
    r.add_argument("--z-spacing", type=float, default=None, metavar="RATIO",
                   help="with --instances on a Z stack: Z step / pixel width, so objects are split and "
                        "merged by their real shape in anisotropic stacks (default: the file's own scale, "
                        "ImageJ spacing or OME PhysicalSizeZ / PhysicalSizeX, else 1)")
    r.add_argument("--separate-by", choices=("boundary", "distance"), default=None,
                   help="with --instances: split touching objects along the model's learnt borders "
                        "('boundary', a model fine-tuned with borders) or by a distance-transform "
                        "watershed ('distance'); default: what the model chose on its validation objects "
                        "(btunet info MODEL shows separate_by and the F1 of each)")
    r.add_argument("--min-size", type=int, default=None, metavar="PX",
                   help="with --instances: drop objects smaller than this many px (voxels for 3-D ids); "
                        "default: the model's own, a tenth of its median training object from instance "
                        "masks, else 15; 0 keeps every object")
    r.add_argument("--probabilities", action="store_true", help="also write NAME_prob.tif (float32)")
    r.add_argument("--uncertainty", action="store_true",
                   help="also write NAME_uncertainty.tif (float32, 0 = certain, 1 = a coin toss; from four "
                        "test-time flips, 4x the time): where to paint next")
    r.add_argument("--tta", action="store_true",
                   help="average the outputs of four flips of every plane (test-time augmentation, 4x the "
                        "time): smoother edges, usually a few thousandths more Dice")
    r.add_argument("--exact", action="store_true", help="fp32 instead of the bf16 fast path")
    r.add_argument("--overwrite", action="store_true", help="replace existing output files")
    r.add_argument("--device", choices=DEVICES, default="auto", help="compute device (default auto)")
    _add_threads(r)
    _add_axes(r, "inputs (the outputs have the same axes without C)")
    _add_chunked(r)  # --zarr, --scheduler, --chunk, --depth

    e = sub.add_parser("evaluate", help="score predicted label images against ground truth",
                       description="Pair files by name; print per-image and mean Dice, IoU, precision, recall, "
                                   "object F1 at IoU 0.5, mean matched IoU, average precision at IoU "
                                   "0.5:0.05:0.95 (ap; ap50, ap75), the predicted and true object counts, "
                                   "splits (true objects given 2 or more ids), merges (ids over 2 or more "
                                   "true objects) and the count error |predicted - true| / true; with "
                                   "--classes each class's Dice.")
    e.add_argument("--pred", required=True, metavar="DIR", help="predicted label images")
    e.add_argument("--truth", required=True, metavar="DIR", help="ground-truth label images")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    e.add_argument("--classes", action="store_true",
                   help="the images hold class ids (0 = background): also report each class's Dice")

    i = sub.add_parser("info", help="print a checkpoint's metadata",
                       description="Print what a checkpoint holds: variant, channels, training provenance.")
    i.add_argument("file", metavar="FILE")

    from .export import add_export_command
    add_export_command(sub)
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or the exit status when parsing ended the run (--help, a usage error)."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as stop:
        sys.stdout.flush()
        return stop.code if isinstance(stop.code, int) else 2


def _add_axes(p: argparse.ArgumentParser, what: str) -> None:
    """``--axes`` / ``--channel-axis`` (one of them): what each axis of the images is."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--axes", metavar="LETTERS",
                       help="what each axis of the " + what + " is, one letter per axis from T (time), Z (depth), "
                            "C (channels), Y, X, e.g. TZYX, CYX, ZCYX, YXC; Y and X come last apart from C. "
                            "A C axis is the model's input channels (1 or 3; 4 = RGBA), T and Z are planes. "
                            "Default: the axes an OME-TIFF or ImageJ file declares, else a trailing axis of 3 "
                            "or 4 is colour and every other leading axis is planes")
    group.add_argument("--channel-axis", type=int, metavar="N",
                       help="shorthand for --axes: axis N (negative counts from the end) holds the channels, "
                            "the last two others are Y, X and any before them Z (or T, Z)")


def check_axes_option(args: argparse.Namespace) -> None:
    """The letters of ``--axes`` (their count is checked against each image before any work)."""
    if getattr(args, "axes", None) is not None:
        from .axes import check_letters
        args.axes = check_letters(args.axes)


def input_axes(paths, axes, channel_axis, channels=None) -> list:
    """Each input's checked axes, from file headers only, before any work: ``--axes``,
    ``--channel-axis``, else the axes the file declares (OME-TIFF, ImageJ, OME-Zarr) when the
    model can read its channels (``axes.declared``), else None (the default rule). An input that
    cannot be read gets None here and is reported when it is read."""
    from .axes import check_channels, declared, resolve_axes
    from .imageio import inspect_image
    found = []
    for path in paths:
        try:
            shape = _declared_shape(path, inspect_image)
        except BTUnetError:  # UnreadableImage, a broken zarr store: reported when it is read
            found.append(None)
            continue
        if axes is None and channel_axis is None:
            found.append(declared(path, shape, channels).axes)
            continue
        try:
            given = resolve_axes(shape, axes, channel_axis)
            check_channels(given, shape, channels)
        except BTUnetError as exc:
            raise BTUnetError(f"{getattr(path, 'name', path)}: {exc}") from None
        found.append(given)
    return found


def one_axes(paths, axes, channel_axis, channels=None):
    """The one axes string of a set of training images (they share their axes), or None."""
    found = set(input_axes(paths, axes, channel_axis, channels))
    if len(found) > 1:
        raise BTUnetError("the images declare different axes (" + ", ".join(sorted(str(a) for a in found))
                          + "); give --axes, or train on images of one kind")
    return found.pop() if found else None


def _declared_shape(path, inspect_image) -> tuple:
    from pathlib import Path
    path = Path(path)
    if path.is_dir():  # a zarr store
        from .chunked import open_zarr
        return tuple(open_zarr(path).shape)
    return tuple(inspect_image(path, budget=False))
