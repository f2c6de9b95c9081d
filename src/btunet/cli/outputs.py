"""Where the command line writes, decided and checked before any work starts.

One policy for every command: the output is of the right kind (a folder for ``predict``, a file
for a model), writable (probed with a temporary file), never one of the inputs nor inside an
input folder, even with ``--overwrite`` (:func:`check_not_input`), no two inputs write the same
file, and nothing that exists is replaced without ``--overwrite``. ``predict``
computes every output path of every input up front (:func:`plan_predictions`), for the
in-memory and the block-wise (dask) engines alike.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import BTUnetError

TIFF_SUFFIXES = (".tif", ".tiff")
_NAME_SUFFIXES = (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif")


@dataclass(frozen=True)
class Target:
    """One input of ``btunet predict`` and the files it becomes."""
    source: Path
    labels: Path
    probabilities: Path | None
    uncertainty: Path | None
    chunked: bool  # predicted block by block with dask (zarr inputs, --zarr, --scheduler)

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.labels, self.probabilities, self.uncertainty) if p is not None]


def output_stem(path: Path) -> str:
    """The name outputs are built from: the file name without ``.ome.zarr``/``.zarr``/``.ome.tif``/suffix."""
    name = path.name
    for suffix in _NAME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return path.stem


def find_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files and zarr arrays given as files or folders (not recursive); none found is an error."""
    from ..infer.chunked import is_zarr
    from ..io.imageio import IMAGE_SUFFIXES, list_images
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if is_zarr(p):
            found.append(p)
        elif p.is_dir():
            found += sorted(c for c in p.iterdir() if c.is_dir() and is_zarr(c))
            found += list_images([p])
        else:
            found += list_images([p])
    if not found:
        raise BTUnetError("no images or zarr arrays found in " + ", ".join(map(str, paths))
                          + " (supported: " + ", ".join(IMAGE_SUFFIXES) + ", zarr)")
    return found


def plan_predictions(inputs: Sequence[Path], out: str | os.PathLike, *, chunked: Callable[[Path], bool],
                     zarr: bool, probabilities: bool, uncertainty: bool, overwrite: bool,
                     given: Sequence[str | os.PathLike] = (), protected: Sequence[str | os.PathLike] = ()
                     ) -> list[Target]:
    """Every output of every input, checked; raises BTUnetError before anything is written.

    Labels keep a TIFF input's name (``NAME.tif``), PNG/JPEG inputs give ``NAME.png`` (JPEG would
    corrupt labels), zarr outputs (zarr inputs or ``--zarr``) are ``NAME.zarr``; the extras are
    ``NAME_prob`` and ``NAME_uncertainty`` beside them. ``given``: the folders and files on the
    command line; ``protected``: other files that must never be written (the model).
    """
    from ..infer.chunked import is_zarr
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise BTUnetError(f"--out {folder} is a file; give a folder (one output per input goes into it)")
    for raw in given:
        if Path(raw).is_dir() and not is_zarr(raw) and _same(folder, raw):
            raise BTUnetError(f"--out {folder} is an input folder; write the predictions to another folder")
    check_not_input(folder, [("the model", p) for p in protected] + [("the input", p) for p in given],
                    replaced_whole=False)  # the folder itself stays; its files are checked below
    targets = [_target(p, folder, chunked(p), zarr or is_zarr(p), probabilities, uncertainty) for p in inputs]
    check_outputs([(t.source, path) for t in targets for path in t.paths],
                  list(inputs) + [Path(p) for p in protected], overwrite)
    return targets


def _target(source: Path, folder: Path, chunked: bool, as_zarr: bool, probabilities: bool,
            uncertainty: bool) -> Target:
    stem = output_stem(source)
    if as_zarr:
        return Target(source, folder / f"{stem}.zarr",
                      folder / f"{stem}_prob.zarr" if probabilities else None, None, chunked)
    labels = folder / (source.name if source.suffix.lower() in TIFF_SUFFIXES else f"{stem}.png")
    return Target(source, labels, folder / f"{stem}_prob.tif" if probabilities else None,
                  folder / f"{stem}_uncertainty.tif" if uncertainty else None, chunked)


def check_outputs(outputs: Sequence[tuple[Path, Path]], inputs: Sequence[Path], overwrite: bool) -> None:
    """(source, output) pairs: no output shared by two sources, none an input, none replaced silently."""
    by_output: dict[str, list[Path]] = {}
    for source, path in outputs:
        by_output.setdefault(_key(path), []).append(source)
    shared = [(path, by_output[_key(path)]) for _, path in outputs if len(set(by_output[_key(path)])) > 1]
    if shared:
        seen, parts = set(), []
        for path, sources in shared:
            if _key(path) not in seen:
                seen.add(_key(path))
                parts.append(f"{' and '.join(str(s) for s in dict.fromkeys(sources))} -> {path.name}")
        raise BTUnetError("inputs with the same name would overwrite each other's output: "
                          + "; ".join(parts[:3]) + (f" and {len(parts) - 3} more" if len(parts) > 3 else "")
                          + "; rename them or predict them into separate --out folders")
    inputs_by_key = {_key(p): p for p in inputs}
    inside = {str(parent): p for p in inputs for parent in Path(_key(p)).parents}  # a zarr output is replaced whole
    for _, path in outputs:
        source = inputs_by_key.get(_key(path)) or inside.get(_key(path))
        if source is not None:
            raise BTUnetError(f"writing {path} would replace the input {source}; choose another --out")
    existing = list(dict.fromkeys(path.name for _, path in outputs if path.exists()))
    if existing and not overwrite:
        raise BTUnetError(f"{outputs[0][1].parent} already holds {', '.join(existing[:3])}"
                          + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
                          + "; use --overwrite to replace them or give another --out")


def check_not_input(out: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike | None]],
                    replaced_whole: bool = True) -> None:
    """Refuse an output that is an input, lies inside an input folder or, when ``replaced_whole``
    (a file, or a folder replaced with all it holds), holds an input: with or without ``--overwrite``,
    for every command, because a replaced input cannot be recovered.

    ``inputs``: (what it is, path) pairs such as ``("the model", "m.safetensors")``, named in the
    message; None paths are skipped.
    """
    target = Path(_key(Path(out)))
    rule = "inputs are never written to, even with --overwrite; write to another path"
    for role, given in inputs:
        if given is None:
            continue
        source = Path(_key(Path(given)))
        if target == source:
            raise BTUnetError(f"--out {out} is also an input: it is {role} itself; {rule}")
        if target.is_relative_to(source):
            raise BTUnetError(f"--out {out} lies inside the input folder {given}; {rule}")
        if replaced_whole and source.is_relative_to(target):
            raise BTUnetError(f"--out {out} holds {role} {given}; {rule}")


def check_model_output(out: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike | None]],
                       overwrite: bool) -> Path:
    """A checkpoint to write: a file name, no input nor inside an input folder (:func:`check_not_input`),
    not replaced silently, in a writable folder.

    Called before training, so a bad ``--out`` is reported in a second, not after the run.
    """
    target = Path(out)
    if target.is_dir():
        raise BTUnetError(f"--out {out} is a folder; give a file name such as {target / 'model.safetensors'}")
    check_not_input(target, inputs)
    if target.exists() and not overwrite:
        raise BTUnetError(f"{out} exists; use --overwrite to replace it or give another --out")
    probe_writable(target.parent)
    return target


def probe_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` if needed and write, sync and remove a small file in it; folders created
    here are removed again, so a failed check leaves nothing behind."""
    folder = Path(folder)
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".btunet-probe-", suffix=".tmp")
        try:
            os.write(fd, b"btunet")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        raise BTUnetError(f"cannot write to {folder}: {exc.strerror or exc}; choose another --out "
                          "or free space / fix permissions") from exc
    finally:
        for p in created:  # deepest first
            with contextlib.suppress(OSError):
                p.rmdir()


def _same(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return _key(Path(a)) == _key(Path(b))


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(os.path.realpath(path)))


__all__ = ["Target", "check_model_output", "check_not_input", "check_outputs", "find_inputs", "output_stem",
           "plan_predictions", "probe_writable"]
