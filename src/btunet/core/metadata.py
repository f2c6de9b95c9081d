"""What a checkpoint says about itself, as typed and checked values.

A checkpoint's JSON metadata decides which network is built before any weight is read, so every
field that shapes the network or the prediction is checked here first: a tampered or damaged
file is refused with the field named instead of allocating a huge model or crashing later.
Fields this module does not know (training provenance: dates, files, loss histories...) are
kept as they are in ``provenance``.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..base import fields
from ..base.errors import BTUnetError, CheckpointError
from ..labels.annotations import MASK_MODES
from ..labels.heads import ClassInfo, HeadSpec, default_classes, parse_classes
from ..labels.instances import MIN_SIZE, SEPARATIONS
from ..models import SegmentationModel, create_model
from ..models.registry import check_model_settings

FORMAT = "btunet"
FORMAT_VERSION = 1
KINDS = ("encoder", "model")
#: The probability above which a pixel is object, unless a model stores its own.
DEFAULT_THRESHOLD = 0.5
#: "percentile": the low-high percentiles -> [0, 1]; "background": the background peak -> 0, high -> 1
NORMALIZATION_METHODS = ("percentile", "background")


def check_threshold(name: str, value: Any) -> float:
    """A probability threshold: strictly between 0 and 1 (0 or 1 would make everything one class)."""
    return fields.number(name, value, 0.0, 1.0, lo_open=True, hi_open=True)


def _object(name: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise BTUnetError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def _known_keys(name: str, raw: dict, keys) -> None:
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise BTUnetError(f"{name}.{unknown[0]} is not a setting btunet knows (expected: {', '.join(keys)})")


def _required(name: str, raw: Mapping, key: str) -> Any:
    if key not in raw:
        raise BTUnetError(f"{name}{key} is missing")
    return raw[key]


@dataclass(frozen=True)
class Normalization:
    """Intensity normalisation of the whole image or stack (``normalize.py``): its ``low`` and ``high``
    percentiles map to [0, 1] ("percentile"), or its background peak to 0 and its ``high`` percentile
    to 1 ("background"; ``low`` unused)."""
    method: str = "percentile"
    low: float = 1.0
    high: float = 99.8

    def __post_init__(self) -> None:
        fields.choice("normalization.method", self.method, NORMALIZATION_METHODS)
        fields.number("normalization.low", self.low, 0.0, 100.0)
        fields.number("normalization.high", self.high, 0.0, 100.0)
        if not self.low < self.high:
            raise BTUnetError(f"normalization.low ({self.low}) must be below "
                              f"normalization.high ({self.high})")

    @classmethod
    def parse(cls, raw: Any) -> Normalization:
        raw = _object("normalization", raw)
        _known_keys("normalization", raw, ("method", "low", "high"))
        return cls(**{k: _required("normalization.", raw, k) for k in ("method", "low", "high")})

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "low": self.low, "high": self.high}


def _finite_list(name: str, raw: Any, length: int | None = None) -> tuple[float, ...]:
    """A non-empty JSON list of finite numbers (of ``length`` items, when given)."""
    if not isinstance(raw, (list, tuple)) or not raw or len(raw) > 101:
        raise BTUnetError(f"{name} must be a list of 1 to 101 numbers, got {raw!r}")
    if length is not None and len(raw) != length:
        raise BTUnetError(f"{name} has {len(raw)} values but intensity_reference.quantiles has {length}")
    for i, v in enumerate(raw):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise BTUnetError(f"{name}[{i}] must be a finite number, got {v!r}")
    return tuple(float(v) for v in raw)


@dataclass(frozen=True)
class IntensityReference:
    """What a model's training images looked like after its normalisation (``btunet.pipeline.reference``):
    for each percentile in ``quantiles``, the lowest and the highest value over the images."""
    quantiles: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        q = _finite_list("intensity_reference.quantiles", self.quantiles)
        if any(not 0 <= v <= 100 for v in q) or any(a >= b for a, b in zip(q, q[1:], strict=False)):
            raise BTUnetError(f"intensity_reference.quantiles must rise from 0 to 100, got {list(q)}")
        low = _finite_list("intensity_reference.low", self.low, len(q))
        high = _finite_list("intensity_reference.high", self.high, len(q))
        for i, (a, b) in enumerate(zip(low, high, strict=True)):
            if a > b:
                raise BTUnetError(f"intensity_reference.low[{i}] ({a:g}) is above intensity_reference.high[{i}] "
                                  f"({b:g})")
        for key, value in (("quantiles", q), ("low", low), ("high", high)):
            object.__setattr__(self, key, value)

    @classmethod
    def parse(cls, raw: Any) -> IntensityReference:
        raw = _object("intensity_reference", raw)
        keys = ("quantiles", "low", "high")
        _known_keys("intensity_reference", raw, keys)
        return cls(**{k: _required("intensity_reference.", raw, k) for k in keys})

    def as_dict(self) -> dict[str, Any]:
        return {"quantiles": [int(q) if q == int(q) else q for q in self.quantiles],
                "low": list(self.low), "high": list(self.high)}


@dataclass(frozen=True)
class ModelSpec:
    """The keyword arguments that rebuild a variant (``SegmentationModel.config``)."""
    name: str
    in_channels: int
    out_channels: int = 1
    base_filters: int = 16
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_model_settings(self.name, self.in_channels, self.out_channels, self.base_filters, self.dropout,
                             prefix="model.")

    @classmethod
    def parse(cls, raw: Any) -> ModelSpec:
        raw = _object("model", raw)
        keys = ("name", "in_channels", "out_channels", "base_filters", "dropout")
        _known_keys("model", raw, keys)
        return cls(**{k: _required("model.", raw, k) for k in keys})

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "base_filters": self.base_filters, "dropout": self.dropout}

    def build(self) -> SegmentationModel:
        """The network, allocated on the current default device (``torch.device("meta")`` for none)."""
        return create_model(**self.as_dict())


#: Top-level keys the typed structure owns; the rest is provenance.
_TYPED = ("format", "format_version", "kind", "model", "channels", "normalization", "threshold",
          "classes", "instances", "min_size", "separate_by", "intensity_reference")
#: The largest object-size floor a checkpoint may carry (px): 4096² would drop any real object.
MAX_MIN_SIZE = 4096 ** 2
#: How a model separates touching objects: ``boundary`` = it has a boundary channel.
INSTANCE_METHODS = ("boundary",)


@dataclass(frozen=True)
class CheckpointMetadata:
    """The checked metadata of a checkpoint (or of a model about to be saved)."""
    kind: str
    model: ModelSpec
    normalization: Normalization = Normalization()
    threshold: float = DEFAULT_THRESHOLD
    mask_mode: str | None = None       # what the model was trained on (trained_on.mask_mode)
    format_version: int = FORMAT_VERSION
    classes: tuple = ()                   # ClassInfo of classes 1..K; () = one class, "object"
    instances: str | None = None       # "boundary": the last output channel is object borders
    min_size: int = MIN_SIZE              # instances: objects below this (px) are dropped
    separate_by: str = "distance"         # instances: touching objects split along the learnt borders
    #                                       ("boundary") or by a distance watershed (separation.py)
    intensity_reference: IntensityReference | None = None  # None: trained before btunet kept one (never warns)
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def channels(self) -> int:
        return self.model.in_channels

    @property
    def head(self) -> HeadSpec:
        """What the output channels mean."""
        return HeadSpec(max(1, len(self.classes)), self.instances == "boundary")

    @property
    def class_infos(self) -> tuple[ClassInfo, ...]:
        return self.classes or default_classes(1)

    @classmethod
    def from_dict(cls, raw: Any) -> CheckpointMetadata:
        """Check every field that shapes the network or the prediction (BTUnetError names it)."""
        raw = _object("metadata", raw)
        fmt = _required("", raw, "format")
        if fmt != FORMAT:
            raise BTUnetError(f"format must be {FORMAT!r}, got {fmt!r}")
        version = fields.whole("format_version", _required("", raw, "format_version"), 1)
        if version > FORMAT_VERSION:
            from .. import __version__
            raise CheckpointError(f"format_version {version} was written by a newer btunet (this is "
                              f"btunet {__version__}, which reads format {FORMAT_VERSION}); "
                              "upgrade btunet to read it")
        kind = fields.choice("kind", _required("", raw, "kind"), KINDS)
        model = ModelSpec.parse(_required("", raw, "model"))
        channels = fields.whole("channels", _required("", raw, "channels"), 1)
        if channels != model.in_channels:
            raise BTUnetError(f"channels ({channels}) does not match model.in_channels ({model.in_channels})")
        norm = Normalization.parse(raw["normalization"]) if "normalization" in raw else Normalization()
        threshold = check_threshold("threshold", raw.get("threshold", DEFAULT_THRESHOLD))
        trained_on = _object("trained_on", raw.get("trained_on", {}))
        mask_mode = trained_on.get("mask_mode")
        if mask_mode is not None:
            fields.choice("trained_on.mask_mode", mask_mode, MASK_MODES)
        history = raw.get("loss_history", [])
        if not isinstance(history, list) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in history):
            raise BTUnetError("loss_history must be a list of numbers")
        classes = parse_classes(raw["classes"]) if raw.get("classes") is not None else ()
        instances = raw.get("instances")
        if instances is not None:
            fields.choice("instances", instances, INSTANCE_METHODS)
        if kind == "model":
            head = HeadSpec(max(1, len(classes)), instances == "boundary")
            if model.out_channels != head.channels:
                raise BTUnetError(f"model.out_channels ({model.out_channels}) does not match "
                                  f"{len(classes) or 1} class(es)" + (" and a boundary channel" if head.boundary
                                                                     else "") + f" ({head.channels} channels)")
        min_size = fields.whole("min_size", raw.get("min_size", MIN_SIZE), 0, MAX_MIN_SIZE)
        separate_by = fields.choice("separate_by", raw.get("separate_by", instances or "distance"), SEPARATIONS)
        if separate_by == "boundary" and instances != "boundary":
            raise BTUnetError("separate_by 'boundary' needs a boundary channel (instances: 'boundary')")
        reference = raw.get("intensity_reference")
        reference = IntensityReference.parse(reference) if reference is not None else None
        provenance = {k: v for k, v in raw.items() if k not in _TYPED}
        return cls(kind, model, norm, threshold, mask_mode, version, classes, instances, min_size, separate_by,
                   reference, provenance)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: the typed fields first, then the provenance as it was."""
        out: dict[str, Any] = {"format": FORMAT, "format_version": self.format_version, "kind": self.kind,
                               "model": self.model.as_dict(), "channels": self.channels}
        if self.kind == "model":
            out["threshold"] = self.threshold
            out["min_size"] = self.min_size
        out["normalization"] = self.normalization.as_dict()
        if self.classes:
            out["classes"] = [c.as_dict() for c in self.classes]
        if self.instances is not None:
            out["instances"] = self.instances
            out["separate_by"] = self.separate_by
        if self.intensity_reference is not None:
            out["intensity_reference"] = self.intensity_reference.as_dict()
        return {**out, **copy.deepcopy(dict(self.provenance))}

    def checked(self) -> CheckpointMetadata:
        """This metadata checked field by field as a reader checks it (``from_dict``): what training
        writes is refused where it is made, not when the model is saved or used."""
        return type(self).from_dict(self.to_dict())

    def object_dict(self) -> dict[str, Any]:
        """The ``metadata`` a trained model or encoder object carries: ``to_dict`` without the header
        that saving takes from the network itself (format, kind, model, channels). A model keeps
        ``intensity_reference`` as None when it has none (continued from a model trained before
        btunet kept one), so that its readers see that no reference was kept."""
        model = self.kind == "model"
        out: dict[str, Any] = {}
        if model and self.classes:
            out["classes"] = [c.as_dict() for c in self.classes]
        if model and self.instances is not None:
            out["instances"] = self.instances
        out["normalization"] = self.normalization.as_dict()
        if model:
            out["threshold"] = self.threshold
            out["intensity_reference"] = (self.intensity_reference.as_dict()
                                          if self.intensity_reference is not None else None)
            out["min_size"] = self.min_size
            if self.instances is not None:
                out["separate_by"] = self.separate_by
        return {**out, **self.provenance}


__all__ = ["CheckpointMetadata", "DEFAULT_THRESHOLD", "FORMAT", "FORMAT_VERSION", "IntensityReference", "KINDS",
           "ModelSpec", "Normalization", "check_threshold"]
