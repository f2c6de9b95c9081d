"""``btunet predict``: one output plan for every input, then the in-memory or the block-wise engine.

Every output path is computed and checked before the first prediction (``outputs``); an input is
predicted block by block with dask when it is a zarr array or ``--zarr``/``--scheduler`` is given,
else in memory (TIFF stacks streamed plane by plane). An input that cannot be read is skipped
with a one-line warning; when none could be predicted the command fails. An image unlike the
model's training images (``btunet.pipeline.reference``) is predicted, with one warning line naming it.
"""
from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..base.errors import BTUnetError
from ..io.imageio import UnreadableImage, max_plane_pixels
from .outputs import Target

LOCAL_SCHEDULERS = ("threads", "threading", "sync", "synchronous", "processes")
_MULTIPLE = 16  # the models' down-sampling grid (chunk and depth are rounded up to it)


def is_chunked(args, path: Path) -> bool:
    """Whether this input runs block by block: zarr inputs, ``--zarr``, ``--scheduler``."""
    from ..infer.chunked import is_zarr
    return bool(args.zarr or args.scheduler or is_zarr(path))


def cmd_predict(a) -> None:
    from ..core.checkpoint import read_metadata
    from .outputs import find_inputs, plan_predictions, probe_writable
    header = read_metadata(a.model)
    if header["kind"] != "model":  # the header only: a wrong file is refused first
        raise BTUnetError(f"{a.model} is a pre-trained encoder, not a fine-tuned model; fine-tune it "
                          "first (btunet finetune --encoder ...)")
    if a.separate_by == "boundary" and header.get("instances") != "boundary":
        raise BTUnetError(f"--separate-by boundary needs a model with learnt borders; {a.model} has none "
                          "(fine-tune with --boundary, or use --separate-by distance)")
    from ..core.config import PredictConfig
    PredictConfig(threshold=a.threshold, z_spacing=1.0 if a.z_spacing is None else a.z_spacing,
                  min_size=a.min_size)  # numbers checked first
    max_plane_pixels()  # a bad setting is one error here, not a skip per file (block-wise errors skip)
    inputs = find_inputs(a.inputs)
    targets = plan_predictions(inputs, a.out, chunked=lambda p: is_chunked(a, p), zarr=a.zarr,
                               probabilities=a.probabilities, uncertainty=a.uncertainty,
                               overwrite=a.overwrite, given=a.inputs, protected=[a.model])
    chunked = [t for t in targets if t.chunked]
    if chunked and a.instances:
        raise BTUnetError("--instances needs whole-image labelling and is not available for chunked "
                          f"(zarr / --zarr / --scheduler) prediction ({chunked[0].source.name}); "
                          "label the written mask afterwards")
    for flag, name in ((a.uncertainty, "--uncertainty"), (a.tta, "--tta")):
        if chunked and flag:
            raise BTUnetError(f"{name} works on TIFF/PNG inputs, not with zarr, --zarr or --scheduler")
    from .cli_args import input_axes
    model = _load(a, in_memory=len(chunked) < len(targets))
    channels = model.in_channels if model is not None else None
    axes_of = dict(zip([t.source for t in targets],
                       input_axes([t.source for t in targets], a.axes, a.channel_axis, channels), strict=True))
    ref = _model_ref(a.model) if chunked else None
    probe_writable(a.out)
    client = connect(a.scheduler) if chunked else None
    out = Path(a.out)
    created = not out.exists()
    written, failed = [], []
    from tqdm import tqdm
    bar = tqdm(total=len(targets), desc="predict", unit="image", file=sys.stderr)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for target in targets:
            try:
                if target.chunked:
                    predict_target(ref, target, a, client, axes=axes_of[target.source])
                else:
                    _predict_in_memory(model, target, a, bar, axes=axes_of[target.source])
                written.append(target.labels)
            except UnreadableImage as exc:
                warnings.warn(f"skipping {target.source.name}: {exc}", stacklevel=2)
                failed.append(target.source.name)
            bar.update(1)
    finally:
        bar.close()
        if client is not None:
            client.close()
    if not written:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise BTUnetError(f"none of the {len(targets)} input(s) could be predicted; nothing written")
    print(f"wrote {len(written)} prediction(s) to {out}"
          + (f"; skipped (could not read): {', '.join(failed)}" if failed else ""))


def _load(a, in_memory: bool):
    if not in_memory:
        return None
    from ..base.device import resolve_device
    from ..core.checkpoint import load_model
    return load_model(a.model, resolve_device(a.device))


def _model_ref(path: str):
    from ..infer.chunked import ModelRef
    return ModelRef(path)


def z_spacing_of(a, source) -> float:
    """--z-spacing, else the Z step / pixel width the file declares (``axes.declared``), else 1."""
    if a.z_spacing is not None:
        return a.z_spacing
    from ..io.axes import declared
    return declared(source).z_spacing or 1.0


def _predict_in_memory(model, target: Target, a, bar, axes: str | None = None) -> None:
    from ..infer.predict import predict, predict_to_tiff
    from ..io.imageio import read_lazy, write_image_atomic, write_labels
    from ..pipeline.reference import OutsideReferenceWarning

    def show_planes(done: int, n: int) -> None:  # stacks: which plane of the current image
        if n > 1:
            bar.set_postfix_str(f"plane {done}/{n}")

    image = read_lazy(target.source)
    options = {"threshold": a.threshold, "instances": a.instances, "device": a.device, "fast": not a.exact,
               "on_progress": show_planes, "axes": axes, "z_spacing": z_spacing_of(a, target.source),
               "min_size": a.min_size,
               "separate_by": a.separate_by, "tta": a.tta}
    if a.per_plane:
        options["instances_3d"] = False
    try:
        with warnings.catch_warnings():  # the engine's own warning does not name the file: said below
            warnings.simplefilter("ignore", OutsideReferenceWarning)
            if target.labels.suffix.lower() in (".tif", ".tiff"):  # streamed: memory stays one plane
                unlike = predict_to_tiff(model, image, target.labels, target.probabilities,
                                         uncertainty_path=target.uncertainty, **options)
            else:
                result = predict(model, image, probabilities=target.probabilities is not None,
                                 uncertainty=target.uncertainty is not None, **options)
                unlike = result.outside_reference
                write_labels(target.labels, result.labels)
                if target.probabilities is not None:
                    write_image_atomic(target.probabilities, result.probabilities.astype(np.float32))
                if target.uncertainty is not None:
                    write_image_atomic(target.uncertainty, result.uncertainty)
    finally:
        if hasattr(image, "close"):
            image.close()
    if unlike:  # predicted and written all the same
        warnings.warn(f"{target.source.name}: {unlike}", OutsideReferenceWarning, stacklevel=2)


# --------------------------------------------------------------------------- block-wise engine

def connect(address: str | None):
    """A ``dask.distributed`` client for ``--scheduler``, made before any work so an unreachable
    address is one message, not a traceback after the first image; None for local schedulers."""
    if address is None or address in LOCAL_SCHEDULERS:
        return None
    try:
        import dask
        from distributed import Client
    except ImportError as exc:
        raise BTUnetError(f"--scheduler {address} needs dask.distributed ({exc.name or exc} does not import); "
                          "pip install 'napari-btunet[scaling]'") from exc
    try:
        return Client(address, timeout=dask.config.get("distributed.comm.timeouts.connect"))
    except Exception as exc:  # bad address, refused, timed out, a foreign server: all one message
        raise BTUnetError(f"cannot reach the dask scheduler at {address}: {str(exc).splitlines()[0]}; "
                          "check the address (tcp://HOST:PORT) and that the scheduler runs") from exc


def predict_target(ref, target: Target, args, client=None, axes: str | None = None) -> Path:
    """One input, block by block, into ``target``'s paths.

    zarr outputs are written block-wise; a TIFF/PNG output (``--scheduler`` without ``--zarr``) is
    gathered in memory, so it obeys the in-memory pixel budget. An input that cannot be read, or
    is thinner than the block overlap, raises UnreadableImage (the caller skips it).
    """
    from ..infer.chunked import is_zarr, open_image, predict_chunked
    from ..io.imageio import inspect_image, is_decode_error, is_rgb, write_image_atomic, write_labels
    path, to_zarr = target.source, target.labels.suffix == ".zarr"
    try:
        if not is_zarr(path):
            inspect_image(path, budget=not to_zarr)
        image = open_image(path)
    except BTUnetError as exc:
        raise exc if isinstance(exc, UnreadableImage) else UnreadableImage(str(exc)) from exc
    shape = tuple(image.shape)
    yx = tuple(shape[axes.index(c)] for c in "YX") if axes else (shape[:-1] if is_rgb(image) else shape)[-2:]
    if len(yx) < 2 or 0 in shape:
        raise UnreadableImage(f"cannot predict {path.name}: it is empty or has no Y and X axes (shape {shape})")
    common = {"chunks": args.chunk, "depth": _depth(path, yx, args.chunk, args.depth), "threshold": args.threshold,
              "device": args.device, "fast": not args.exact, "axes": axes}
    scheduler = client if client is not None else args.scheduler
    try:
        unlike, common["norm_range"] = _reference_check(ref, image, axes)
        if to_zarr:
            predict_chunked(ref, image, out=target.labels, probabilities_out=target.probabilities,
                            scheduler=scheduler, progress=True, overwrite=args.overwrite, **common)
        else:
            prob = _gather(predict_chunked(ref, image, output="probabilities", **common), scheduler)
    except Exception as exc:
        if is_decode_error(exc):  # damaged data surfaces only when its blocks are read
            raise UnreadableImage(f"cannot read image {path}: {exc}") from exc
        raise
    if not to_zarr:
        from ..pipeline.thresholds import resolve_threshold
        threshold = resolve_threshold(ref.threshold, args.threshold)
        write_labels(target.labels, (prob > threshold).astype(np.uint8))
        if target.probabilities is not None:
            write_image_atomic(target.probabilities, prob)
    if unlike:  # as for in-memory inputs: predicted, and said once with the file's name
        from ..pipeline.reference import OutsideReferenceWarning
        warnings.warn(f"{path.name}: {unlike}", OutsideReferenceWarning, stacklevel=2)
    return target.labels


def _reference_check(ref, image, axes: str | None) -> tuple[str | None, tuple[float, float] | None]:
    """(why a block-wise input is unlike the model's training images or None, the input's intensity
    range): the range is computed once, for this check and for the prediction."""
    if ref.settings.intensity_reference is None:
        return None, None
    from ..pipeline.planes import PlaneLayout, engine_image, stack_range
    from ..pipeline.reference import outside_reference
    image, rgb = engine_image(image, axes, None, ref.channels)
    lo, hi = stack_range(image, rgb, ref.normalization)
    layout = PlaneLayout(tuple(int(s) for s in image.shape), rgb, ref.channels, lo, hi)
    return outside_reference(ref.settings.intensity_reference, image, layout), (lo, hi)


def _depth(path: Path, yx: Sequence[int], chunk: int, depth: int) -> int:
    """``chunked.block_halo`` for one input; an input thinner than the halo is skipped (UnreadableImage)."""
    from ..infer.chunked import block_halo
    return block_halo(tuple(yx), chunk, depth, path.name, "--depth", "predict it without --zarr", UnreadableImage)


def _gather(lazy, scheduler) -> np.ndarray:
    if scheduler is None or isinstance(scheduler, str):
        return lazy.compute(scheduler=scheduler or "threads", num_workers=1)
    return scheduler.compute(lazy).result()
