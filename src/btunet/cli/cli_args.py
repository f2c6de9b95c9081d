"""The ``btunet`` argument parser, and the checks of its numbers before any work starts."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Annotated, Any

from pydantic import Field

from .. import __version__
from ..base.errors import BTUnetError
from ..base.settings_schema import Limits, Whole, limits, settings, shown
from ..core.config import FinetuneConfig, PredictConfig, PretrainConfig
from ..infer.chunked import DEFAULT_CHUNK, DEFAULT_DEPTH
from ..models import MODELS

EPILOG = """examples:
  btunet pretrain unlabelled/ --out encoder.safetensors --epochs 50
  btunet finetune --images train/images --masks train/masks --encoder encoder.safetensors --out model.safetensors
  btunet predict model.safetensors test/images --out predictions/ --instances
  btunet predict model.safetensors timelapse.tif --out predictions/ --axes TZYX
  btunet evaluate --pred predictions/ --truth test/masks
  btunet info model.safetensors

exit status: 0 done, 2 bad input or nothing could be done (one line on stderr), 130 interrupted
"""


@settings
class CommandOptions:
    """Settings only the command line has: its CPU threads and the blocks of chunked prediction."""
    threads: Annotated[Whole | None, Field(ge=1)] = None  # None: one per core other processes leave free
    chunk: Annotated[Whole, Field(ge=16)] = DEFAULT_CHUNK  # block side: at least one 16-px pooling cell
    depth: Annotated[Whole, Field(ge=0)] = DEFAULT_DEPTH   # overlap between blocks


def _options(config: type, *names: str, **renamed: str) -> dict[str, tuple[type, str]]:
    return {**{name: (config, name) for name in names}, **{dest: (config, name) for dest, name in renamed.items()}}


#: each option that sets a setting, per command: option (its dest) -> (config, setting). The
#: option's type, choices, default and range come from the setting's declaration (settings_schema).
OPTIONS: dict[str, dict[str, tuple[type, str]]] = {
    "pretrain": {**_options(PretrainConfig, "model", "channels", "epochs", "batch_size", "patch_size", "lr",
                            "view_intensity", "view_blur", "dense_weight", "device", "seed"),
                 **_options(CommandOptions, "threads")},
    "finetune": {**_options(FinetuneConfig, "model", "mask_mode", "epochs", "steps_per_epoch", "batch_size",
                            "patch_size", "intensity_augment", "normalization", "encoder_lr_scale",
                            "teacher_features", "continue_teacher", "weight_average", "threshold", "device",
                            "seed", time_budget="time_budget_s", edge_weight="pseudo_edge_weight"),
                 **_options(CommandOptions, "threads")},
    "predict": {**_options(PredictConfig, "threshold", "z_spacing", "separate_by", "min_size", "device"),
                **_options(CommandOptions, "threads", "chunk", "depth")},
}
#: options whose default is the command line's own rather than the setting's, and what it is
OWN_DEFAULTS = {
    ("finetune", "model"): "the encoder's variant, else unet",
    ("finetune", "mask_mode"): "dense, or the mode the --init model was trained with",
    ("finetune", "threshold"): "tuned on the held-out validation pixels, or the --init model's",
    ("predict", "z_spacing"): "the file's own scale, else 1",
}
#: options that accept less than their setting, and why: (command, option) -> least value
AT_LEAST = {("finetune", "epochs"): 1}  # 0 epochs (a model built, not trained) is for the API's callers


def option_limits(command: str, dest: str) -> Limits:
    """What an option accepts: its setting's declared range (narrowed where ``AT_LEAST`` says)."""
    lim = limits(*OPTIONS[command][dest])
    least = AT_LEAST.get((command, dest))
    return lim if least is None else dataclasses.replace(lim, lo=least, lo_open=False)


class Parser(argparse.ArgumentParser):
    """Usage mistakes are one line (``btunet: error: ...``) and exit status 2, like other bad input."""

    def error(self, message: str):
        self.exit(2, f"btunet: error: {message} (see {self.prog} --help)\n")


def _need(lim: Limits) -> str:
    """What an option's value must be, in the command line's words."""
    if lim.hi is not None:
        refused = [shown(bound) for bound, is_open in ((lim.lo, lim.lo_open), (lim.hi, lim.hi_open)) if is_open]
        return f"between {shown(lim.lo)} and {shown(lim.hi)}" + (f", not {' or '.join(refused)}" if refused else "")
    if lim.kind == "whole":
        return f"at least {lim.lo + (1 if lim.lo_open else 0)}"
    return f"a number {'>' if lim.lo_open else '>='} {shown(lim.lo)}"


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse out-of-range, NaN and infinite settings up front, with the option's name; the ranges
    are the settings' own (``option_limits``), so the command line accepts what the API accepts."""
    for dest in OPTIONS.get(getattr(args, "command", None), {}):
        value, lim = getattr(args, dest, None), option_limits(args.command, dest)
        if value is None or lim.kind not in ("whole", "number") or value in lim:
            continue
        raise BTUnetError(f"--{dest.replace('_', '-')} must be {_need(lim)}, got {value}")
    check_axes_option(args)
    if getattr(args, "chunk", None) is not None and args.depth > args.chunk:
        raise BTUnetError(f"--depth ({args.depth}) must not exceed --chunk ({args.chunk}): a block cannot "
                          "be thinner than its overlap")


def settings_of(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """The settings of ``config`` that the options of ``args``'s command give, by setting name."""
    return {name: getattr(args, dest) for dest, (cls, name) in OPTIONS[args.command].items() if cls is config}


def _setting(p: argparse.ArgumentParser, command: str, dest: str, words: str, **extra: Any) -> None:
    """``--dest`` for a setting: type, choices and default from its declaration; ``{range}``,
    ``{default}`` and ``{choices}`` in its help ``words`` are filled in from it."""
    lim = option_limits(command, dest)
    options: dict[str, Any] = {"default": lim.default, "type": {"whole": int, "number": float}.get(lim.kind, str)}
    if lim.kind == "choice":
        options.update(choices=lim.choices, type=type(lim.choices[0]))
    options.update(extra)
    text = words.format(range=lim.bounds_text() if lim.kind in ("whole", "number") else "",
                       default=shown(options["default"]), choices=", ".join(map(str, lim.choices)))
    p.add_argument("--" + dest.replace("_", "-"), help=text, **options)


def _add_threads(p: argparse.ArgumentParser, command: str) -> None:
    _setting(p, command, "threads", "CPU threads for torch and ONNX Runtime ({range}; default: one per core "
             "that other processes leave free, measured at the start; oversubscribed cores slow torch "
             "down many times)", metavar="N")


def _add_device(p: argparse.ArgumentParser, command: str) -> None:
    _setting(p, command, "device", "compute device (auto: CUDA, then Apple MPS, then CPU)")
    _setting(p, command, "seed", "random seed ({range}, default {default})")
    _add_threads(p, command)


def _add_model_output(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", required=True, metavar="FILE", help=f"{what} checkpoint to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")


def _add_chunked(parser: argparse.ArgumentParser) -> None:
    """The ``btunet predict`` options for chunked (zarr, cluster) prediction."""
    parser.add_argument("--zarr", action="store_true",
                        help="write zarr arrays (NAME.zarr, NAME_prob.zarr) and predict block by block; "
                             "zarr / OME-Zarr inputs always are. Block-wise prediction writes masks and "
                             "probabilities, no instances (label the mask afterwards, per plane or in 3-D)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="dask.distributed scheduler to run the blocks on (default: local threads)")
    _setting(parser, "predict", "chunk", "block side in pixels for chunked prediction ({range}, default {default})")
    _setting(parser, "predict", "depth", "overlap between blocks in pixels ({range}, default {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="btunet", description="Self-supervised (Barlow Twins) U-Net segmentation from few annotations.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"btunet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    models = ", ".join(MODELS)
    fd = FinetuneConfig()

    p = sub.add_parser("pretrain", help="Barlow Twins pre-training of an encoder on unlabelled images",
                       description="Pre-train a U-Net encoder with Barlow Twins on unlabelled images "
                                   "(files or folders; every plane of a stack is a sample). The first "
                                   "Ctrl-C (or SIGTERM) stops after the current step and saves the "
                                   "encoder; a second one aborts without saving.")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders (tif, png, jpg)")
    _add_model_output(p, "encoder")
    _setting(p, "pretrain", "model", f"variant: {models} (default {{default}})")
    _setting(p, "pretrain", "channels", "model input channels; images are converted to it (default {default})")
    _setting(p, "pretrain", "epochs", "{range}, default {default}")
    _setting(p, "pretrain", "batch_size", "{range} (Barlow Twins correlates the samples of "
             "a batch), default {default}")
    _setting(p, "pretrain", "patch_size", "{range}, default {default}")
    _setting(p, "pretrain", "lr", "peak learning rate ({range}, default {default})")
    _setting(p, "pretrain", "view_intensity", "how far the two views' gamma, contrast and brightness differ "
             "({range}, default {default}); the encoder learns to ignore what differs, so a lower value keeps "
             "intensity levels in its features", metavar="S")
    _setting(p, "pretrain", "view_blur", "how strongly the views are blurred ({range}, default {default}: sigma "
             "up to 1.5 px); 0 keeps sharpness in the features (in-focus objects told from out-of-focus haze)",
             metavar="S")
    _setting(p, "pretrain", "dense_weight", "add W x a dense Barlow Twins loss on the points both views share, "
             "read from the 1/4-resolution skip (segmentation is dense; {range}); default {default}: the pooled "
             "(global) loss only. One process only; resuming restarts its projector", metavar="W")
    p.add_argument("--resume", metavar="FILE", help="continue from this encoder checkpoint")
    _add_axes(p, "images")
    _add_device(p, "pretrain")

    f = sub.add_parser("finetune", help="train a segmentation model on annotated images",
                       description="Fine-tune a U-Net variant on masks (paired with images by file name). "
                                   "The first Ctrl-C (or SIGTERM) stops after the current step and saves "
                                   "the best model so far; a second one aborts without saving.")
    f.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders")
    f.add_argument("--masks", nargs="+", required=True, metavar="PATH",
                   help="mask files or folders; a mask pairs with the image of the same name")
    _add_model_output(f, "model")
    _setting(f, "finetune", "model", f"variant: {models} (default: the encoder's, else unet)", default=None)
    f.add_argument("--encoder", metavar="FILE",
                   help="pre-trained encoder from `btunet pretrain`, or 'builtin': the unet encoder shipped "
                        "with btunet (Barlow Twins on public unlabelled nuclei and cell images; `btunet info "
                        "builtin` says which)")
    _setting(f, "finetune", "mask_mode", default=None,
             words="dense: 0 = background, >0 = object (instance ids also teach where touching objects "
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
    _setting(f, "finetune", "epochs", "maximum epochs ({range}; default: 60 dense, 12 sparse, "
             f"{fd.continue_epochs} when continuing with --init)")
    _setting(f, "finetune", "steps_per_epoch", "{range}, default {default}")
    _setting(f, "finetune", "batch_size", "{range}, default {default}")
    _setting(f, "finetune", "patch_size", "{range}, default {default}")
    _setting(f, "finetune", "time_budget", "stop after this many seconds ({range})", metavar="SECONDS")
    _setting(f, "finetune", "intensity_augment", "gamma/contrast/brightness jitter, {range} (default {default}: "
             "off, because jitter shifts the intensity at which masks were drawn; raise it when test images "
             "vary in brightness more than percentile normalisation evens out)", metavar="STRENGTH")
    _setting(f, "finetune", "normalization",
             words="how intensities are mapped before the network, saved with the model and used by "
                  "predict: percentile (1st and 99.8th percentiles of each image or stack to 0 and 1) or "
                  "background (its background peak to 0, its 99.8th percentile to 1: files where objects "
                  "cover more or less of the field keep the same values; not for bioimage.io export) "
                  "(default {default}; --init keeps the model's own)")
    _setting(f, "finetune", "encoder_lr_scale", "learning rate of the pre-trained encoder relative to the rest "
             "({range}, default {default}; 0 keeps the encoder frozen)", metavar="FACTOR")
    _setting(f, "finetune", "teacher_features",
             words="sparse strokes: the features of the random forest whose confident guesses label "
                  "the unpainted pixels: multiscale filters; the filters and the maps of the "
                  "encoder the run starts from (--encoder), else of the built-in encoder; or the "
                  "filters and the raw pixel at ilastik's finest scales (fine) (default {default})")
    _setting(f, "finetune", "continue_teacher",
             words="--init with strokes: the unpainted pixels' teacher: model and forest (their mean), "
                  "the model alone near its edges from its second continuation on (both); the mean "
                  "everywhere (mean: for objects that stay too fat after corrections along their rims; "
                  "it can shrink objects drawn right); the model; the forest (default {default})")
    _setting(f, "finetune", "edge_weight", metavar="W",
             words="sparse strokes, a fresh run: the forest's pseudo-labels weigh up to 1 + W times more "
                  "at its object edges, which no stroke marks, so objects do not come out a pixel too "
                  "fat ({range}; 0: flat weights; default {default})")
    _setting(f, "finetune", "weight_average", metavar="DECAY",
             words="keep a moving average of the weights (share DECAY of the old average at each step, "
                  "e.g. 0.97) and use it for the progress preview and the saved model, which then swing "
                  "less from epoch to epoch ({range}; 0: the last weights; default {default})")
    _setting(f, "finetune", "threshold", default=None, metavar="P",
             words="probability threshold saved with the model ({range}; default: with dense masks, the one "
                  "with the best Dice on the held-out validation pixels when it beats 0.5 clearly "
                  "there, else 0.5; with --init, the model's own)")
    _add_axes(f, "images (masks have the same axes without C)")
    _add_device(f, "finetune")

    r = sub.add_parser("predict", help="segment images and stacks with a fine-tuned model",
                       description="Write one label image per input, with the input's name, into DIR. "
                                   "Inputs that cannot be read are skipped with a warning.")
    r.add_argument("model", metavar="MODEL", help="model checkpoint from `btunet finetune`")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _setting(r, "predict", "threshold", "probability threshold ({range}; default: the one saved with the model, "
             "usually 0.5)")
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
    _setting(r, "predict", "z_spacing", default=None, metavar="RATIO",
             words="with --instances on a Z stack: Z step / pixel width ({range}), so objects are split and "
                  "merged by their real shape in anisotropic stacks (default: the file's own scale, "
                  "ImageJ spacing or OME PhysicalSizeZ / PhysicalSizeX, else 1)")
    _setting(r, "predict", "separate_by",
             words="with --instances: split touching objects along the model's learnt borders "
                  "('boundary', a model fine-tuned with borders) or by a distance-transform "
                  "watershed ('distance'); default: what the model chose on its validation objects "
                  "(btunet info MODEL shows separate_by and the F1 of each)")
    _setting(r, "predict", "min_size", metavar="PX",
             words="with --instances: drop objects smaller than this many px (voxels for 3-D ids; {range}); "
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
    _setting(r, "predict", "device", "compute device (default {default})")
    _add_threads(r, "predict")
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

    from ..exporting.export import add_export_command
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
        from ..io.axes import check_letters
        args.axes = check_letters(args.axes)


def input_axes(paths, axes, channel_axis, channels=None) -> list:
    """Each input's checked axes, from file headers only, before any work: ``--axes``,
    ``--channel-axis``, else the axes the file declares (OME-TIFF, ImageJ, OME-Zarr) when the
    model can read its channels (``axes.declared``), else None (the default rule). An input that
    cannot be read gets None here and is reported when it is read."""
    from ..io.axes import check_channels, declared, resolve_axes
    from ..io.imageio import inspect_image
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
        from ..infer.chunked import open_zarr
        return tuple(open_zarr(path).shape)
    return tuple(inspect_image(path, budget=False))
