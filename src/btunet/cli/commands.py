"""The ``btunet`` command line: the same jobs as the napari widgets, without a display.

One error boundary (:func:`main`): a failure the user can act on (bad input, a damaged image, a
full or read-only disk, an unreachable scheduler, Ctrl-C or SIGTERM) is one line on stderr and
exit status 2 (130 when interrupted); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import warnings

from ..base.errors import BTUnetError
from ..core.config import FinetuneConfig, PretrainConfig
from ..models import MODELS
from .cli_args import build_parser, check_numbers, parse, settings_of  # noqa: F401  (build_parser: public)
from .predict_cli import cmd_predict

INTERRUPTED = 130


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


class GracefulStop:
    """Ctrl-C or SIGTERM during training: the first stops after the current step and what was
    trained so far is saved; a second aborts without saving. Before the first step it aborts.

    Passed to the engine as ``should_stop``, which asks it before every step.
    """

    def __init__(self) -> None:
        self.requested, self.checks, self._previous = False, 0, {}

    def __call__(self) -> bool:
        self.checks += 1
        return self.requested

    @property
    def trained(self) -> bool:
        """At least one step finished before the stop."""
        return self.checks > 1

    def _handle(self, signum, frame) -> None:
        if self.requested or self.checks == 0:
            raise KeyboardInterrupt
        self.requested = True
        print("\nbtunet: stopping after this step and saving what was trained so far "
              "(press Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def outcome(self) -> int:
        """The exit status once training returned: interrupted (the model is saved) or done."""
        if self.requested and not self.trained:
            raise KeyboardInterrupt
        return INTERRUPTED if self.requested else 0


def cmd_pretrain(a) -> int:
    from ..io.imageio import list_images
    from ..train.distributed import is_main_process
    from ..train.pretrain import pretrain
    from .cli_args import one_axes
    from .outputs import check_model_output
    _check_model(a.model)
    axes = one_axes(list_images(a.images), a.axes, a.channel_axis)
    check_model_output(a.out, [*(("the image", p) for p in a.images), ("the --resume encoder", a.resume)],
                       a.overwrite)
    cfg = PretrainConfig(**settings_of(a, PretrainConfig), axes=axes)
    main_process = is_main_process()  # under torchrun only rank 0 shows progress and writes
    bar = ProgressBar("pretrain") if main_process else None
    with GracefulStop() as stop:
        try:
            encoder = pretrain(a.images, cfg, on_progress=bar, should_stop=stop, resume=a.resume)
        finally:
            if bar is not None:
                bar.close()
    status = stop.outcome()
    if not main_process:
        return status
    path = encoder.save(a.out)
    print(f"saved encoder ({encoder.variant}, {encoder.channels} channel(s), "
          f"final loss {encoder.metadata['loss_history'][-1]:.2f}) to {path}"
          + (" after an interrupt" if status else ""))
    return status


def cmd_finetune(a) -> int:
    from ..core.checkpoint import model_metadata, save_model
    from ..io.imageio import list_images
    from ..io.pairs import pair_by_name, readable_pairs
    from ..train.finetune import finetune
    from ..train.pretrain import as_encoder
    from .outputs import check_model_output
    if a.init and a.encoder:
        raise BTUnetError("--init continues a fine-tuned model and --encoder starts a new one; give one of them")
    init = _load_init(a.init) if a.init else None
    encoder = as_encoder(a.encoder) if a.encoder else None  # a file, or "builtin"
    model = init.name if init is not None else a.model or (encoder.variant if encoder else "unet")
    if init is not None and a.model and a.model != init.name:
        raise BTUnetError(f"--init holds a {init.name!r} model but --model {a.model!r} was given; drop --model")
    _check_model(model)
    images = list_images(a.images)
    if not images:
        raise BTUnetError("no images found in " + ", ".join(a.images))
    named = pair_by_name(images, list_images(a.masks))  # names only; the files are read below
    same = [i.name for i, m in named if i.resolve() == m.resolve()]
    if same:
        raise BTUnetError(f"the masks given are the images themselves ({', '.join(same[:3])}); "
                          "--masks takes the files or folder of the masks")
    from ..train.builtin_encoder import is_builtin
    check_model_output(a.out, [*(("the image", p) for p in a.images), *(("the mask", p) for p in a.masks),
                               ("the --init model", a.init),
                               ("the --encoder checkpoint", None if is_builtin(a.encoder) else a.encoder)],
                       a.overwrite)
    pairs = readable_pairs(named)  # paired by name, kept by name
    from .cli_args import one_axes
    channels = init.in_channels if init is not None else encoder.channels if encoder is not None else None
    axes = one_axes([i for i, _ in pairs], a.axes, a.channel_axis, channels)
    stored = model_metadata(init) if init is not None else None
    mask_mode = a.mask_mode or (stored.mask_mode if stored is not None else None) or "dense"
    given = settings_of(a, FinetuneConfig)  # the options' settings; the command's own rules below
    given.update(model=model, mask_mode=mask_mode, instances="auto" if a.boundary else "none", axes=axes,
                 class_names=[n.strip() for n in a.class_names.split(",")] if a.class_names else None)
    if given.pop("threshold") is not None:  # a given threshold is kept, not tuned
        given.update(threshold=a.threshold, tune_threshold=False)
    cfg = FinetuneConfig(**given)
    if init is not None:
        cfg = cfg.continuation()  # the engine keeps the model's threshold unless --threshold fixes one
        if a.epochs is not None:
            cfg.epochs = a.epochs
    bar = ProgressBar("finetune")
    with GracefulStop() as stop:
        try:
            net = finetune([i for i, _ in pairs], [m for _, m in pairs], cfg, encoder=encoder,
                           on_progress=bar, should_stop=stop, model=init)
        finally:
            bar.close()
    status = stop.outcome()
    path = save_model(net, a.out)
    meta = net.metadata
    dice = [d for d in meta["val_dice_history"] if d is not None]
    best = meta["best_epoch"]
    print(f"saved {model} model to {path} (epochs {meta['epochs']}, best {best}"
          + (f", validation Dice {dice[best - 1]:.3f}" if dice and 0 < best <= len(dice) else "")
          + (", stopped by an interrupt" if status else "") + ")")
    from ..pipeline.separation import describe_separation
    from ..pipeline.thresholds import describe_threshold
    for line in (describe_threshold(meta), describe_separation(meta)):
        if line:
            print(line)
    return status


def cmd_evaluate(a) -> None:
    import math

    from ..io.imageio import UnreadableImage, list_images, read_mask
    from ..io.pairs import pair_by_name
    from ..labels.metrics import COUNTS, evaluate, mean_scores
    truths = list_images([a.truth])
    if not truths:
        raise BTUnetError(f"no ground-truth images in {a.truth}")
    preds = [p for p in list_images([a.pred]) if not p.stem.endswith(("_prob", "_uncertainty"))]
    rows = []
    for t, p in pair_by_name(truths, preds, sides=("ground-truth image", "prediction")):
        try:
            pred, truth = read_mask(p, "prediction"), read_mask(t, "ground truth")
        except UnreadableImage as exc:
            warnings.warn(f"skipping {t.name}: {exc}", stacklevel=2)
            continue
        rows.append({"name": t.name, **evaluate(pred, truth, objects=not a.classes, classes=a.classes)})
    if not rows:
        raise BTUnetError("none of the prediction / ground-truth pairs could be read; nothing to score")
    mean = mean_scores([{k: v for k, v in r.items() if k != "name"} for r in rows])
    if a.json:
        def defined(scores: dict) -> dict:  # an undefined score (recall of an empty truth) is null
            return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scores.items()}
        print(json.dumps({"images": [defined(r) for r in rows], "mean": defined(mean)}, indent=1, allow_nan=False))
        return
    keys = list(mean)
    width = max(len(r["name"]) for r in rows + [{"name": "mean"}])
    print(f"{'image':<{width}}  " + "  ".join(f"{k:>9}" for k in keys))
    for r in rows + [{"name": "mean", **mean}]:
        print(f"{r['name']:<{width}}  " + "  ".join(
            f"{'n/a':>9}" if math.isnan(v := r.get(k, float("nan"))) else f"{v:9.1f}" if k in COUNTS
            else f"{v:9.4f}" for k in keys))


def cmd_info(a) -> None:
    from ..core.checkpoint import read_metadata
    from ..train.builtin_encoder import builtin_path, is_builtin
    meta = read_metadata(builtin_path() if is_builtin(a.file) else a.file)
    reference = meta.get("intensity_reference")  # one line: its percentiles and their ranges
    if reference is not None:
        meta["intensity_reference"] = "\0reference"
    text = json.dumps(meta, indent=1)
    print(text if reference is None else text.replace(json.dumps("\0reference"), json.dumps(reference)))


def _load_init(path: str):
    """The fine-tuned model that ``--init`` continues; a pre-trained encoder is refused with a hint."""
    from ..core.checkpoint import inspect_checkpoint, load_model
    from ..io.package_reader import is_package
    if not is_package(path) and inspect_checkpoint(path).kind == "encoder":
        raise BTUnetError(f"{path} is a pre-trained encoder, not a fine-tuned model; "
                          "start from it with --encoder instead of --init")
    return load_model(path)


def _check_model(name: str) -> None:
    if name not in MODELS:
        raise BTUnetError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")


def cmd_export(a) -> None:
    from ..exporting.export import cmd_export as run  # the command and its arguments live in export.py
    from .outputs import check_not_input
    # a package folder is replaced with all it holds; an ONNX/TorchScript file goes into an existing folder
    check_not_input(a.out, [("the model", a.model)],
                    replaced_whole=a.format == "bioimageio" or not os.path.isdir(a.out))
    run(a)


COMMANDS = {"pretrain": cmd_pretrain, "finetune": cmd_finetune, "predict": cmd_predict,
            "evaluate": cmd_evaluate, "info": cmd_info, "export": cmd_export}

_OS_HINTS = {
    errno.ENOSPC: "free some space or write to another disk",
    errno.EDQUOT: "free some space or write to another disk",
    errno.EROFS: "write to another folder",
    errno.EACCES: "check the permissions or write to another folder",
    errno.EPERM: "check the permissions or write to another folder",
}


def user_error(exc: BaseException) -> str | None:
    """The one-line message for a failure the user can act on; None for a bug (keeps its traceback)."""
    from ..io.imageio import is_decode_error
    if isinstance(exc, BTUnetError):
        text = str(exc)
    elif isinstance(exc, OSError):  # files, disks, network: the environment, not btunet
        text = exc.strerror or str(exc) or type(exc).__name__
        text += "".join(f": {name}" for name in (exc.filename, exc.filename2) if name)
        text += f"; {_OS_HINTS[exc.errno]}" if exc.errno in _OS_HINTS else ""
    elif isinstance(exc, MemoryError) or (type(exc).__name__ == "OutOfMemoryError"
                                          and type(exc).__module__.startswith("torch")):
        text = (f"out of memory ({str(exc).splitlines()[0] if str(exc) else 'no detail'}); use --zarr "
                "for large images, or a smaller --batch-size / --patch-size / --chunk")
    elif is_decode_error(exc):
        text = f"cannot read an image: {exc}"
    else:
        return None
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """One line per warning, written above a progress bar rather than into it."""
    from tqdm import tqdm
    text = " ".join(str(message).split("\n"))
    tqdm.write(f"btunet: warning: {text}", file=sys.stderr)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if isinstance(args, int):  # --help, --version or a usage error (one line already printed)
        return args
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            check_numbers(args)
            if hasattr(args, "threads"):  # the given count, or one per free core (threads.py)
                from ..base.threads import configure_threads
                configure_threads(args.threads)
            return COMMANDS[args.command](args) or 0
    except KeyboardInterrupt:
        print("btunet: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise
        print(f"btunet: error: {message}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
