"""What a model's output channels mean: one object logit, or background + K classes, and an
optional object-boundary channel.

* K = 1 (one class, the default): channel 0 is the object logit (sigmoid).
* K >= 2: channels 0..K are background, class 1 .. class K (softmax over them).
* ``boundary``: one more, last channel: the logit of "this pixel lies on an object's border"
  (sigmoid); it turns touching objects into separate instances (``instances.py``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, softmax

from ..base.errors import BTUnetError

#: The head has at most 16 channels (``models.registry.MAX_OUT_CHANNELS``): background + 14 classes
#: + a boundary channel.
MAX_CLASSES = 14
#: Colours of classes 1, 2, ... (the painting colours of labels 2, 3, ... are napari's own).
CLASS_COLOURS = ("#ffd700", "#00bfff", "#ff4500", "#7cfc00", "#ff00ff", "#00ffff", "#ffa500",
                 "#9370db", "#adff2f", "#ff69b4", "#1e90ff", "#f0e68c", "#dc143c", "#40e0d0")


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    colour: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "colour": self.colour}


@dataclass(frozen=True)
class HeadSpec:
    """The meaning of every output channel of a segmentation model."""
    n_classes: int = 1
    boundary: bool = False

    @property
    def class_channels(self) -> int:
        return 1 if self.n_classes == 1 else self.n_classes + 1

    @property
    def channels(self) -> int:
        return self.class_channels + int(self.boundary)


def head_of(model) -> HeadSpec:
    """The head of a model object, from its ``metadata`` (``classes``, ``instances``) and channels."""
    meta = getattr(model, "metadata", None) or {}
    spec = HeadSpec(max(1, len(meta.get("classes") or ())), meta.get("instances") == "boundary")
    out = int(getattr(model, "config", {}).get("out_channels", 1))
    if spec.channels != out:
        if out == 1:
            return HeadSpec()
        raise BTUnetError(f"the model has {out} output channels but its metadata describes "
                          f"{spec.channels}; save it with its classes")
    return spec


#: longest class name a model stores (metadata stays small and readable)
MAX_NAME = 100


def default_classes(n: int, names: Sequence[str] | None = None) -> tuple[ClassInfo, ...]:
    """Classes 1..n named ``names`` (or "object" / "class k") with distinct colours."""
    if names is not None and len(names) != n:
        raise BTUnetError(f"{len(names)} class names were given for {n} classes; give one name per class")
    if names is None:
        names = ["object"] if n == 1 else [f"class {k}" for k in range(1, n + 1)]
    return tuple(ClassInfo(k, str(name), CLASS_COLOURS[(k - 1) % len(CLASS_COLOURS)])
                 for k, name in enumerate(names, 1))


def parse_classes(raw: Any) -> tuple[ClassInfo, ...]:
    """Checked ``classes`` metadata: a list of {id, name, colour}, ids 1..K in order."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CLASSES:
        raise BTUnetError(f"classes must be a list of 1 to {MAX_CLASSES} classes")
    out = []
    for k, item in enumerate(raw, 1):
        if not isinstance(item, dict) or set(item) != {"id", "name", "colour"}:
            raise BTUnetError(f"classes[{k - 1}] must be an object with id, name and colour")
        if isinstance(item["id"], bool) or item["id"] != k:
            raise BTUnetError(f"classes[{k - 1}].id must be {k} (classes are numbered 1, 2, ... in order)")
        name, colour = item["name"], item["colour"]
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise BTUnetError(f"classes[{k - 1}].name must be a non-empty name of up to {MAX_NAME} characters")
        if not (isinstance(colour, str) and len(colour) == 7 and colour[0] == "#"
                and all(c in "0123456789abcdefABCDEF" for c in colour[1:])):
            raise BTUnetError(f"classes[{k - 1}].colour must be a colour like '#ff8800', got {colour!r}")
        out.append(ClassInfo(k, name, colour))
    return tuple(out)


def split_logits(logits: np.ndarray, spec: HeadSpec) -> dict[str, np.ndarray | None]:
    """(C, H, W) logits -> object probability (H, W), class probabilities (K+1, H, W) or None,
    boundary probability (H, W) or None."""
    logits = np.asarray(logits, np.float32)
    if spec.n_classes == 1:
        obj, classes = expit(logits[0]), None
    else:
        classes = softmax(logits[:spec.class_channels], axis=0).astype(np.float32)
        obj = 1.0 - classes[0]
    boundary = expit(logits[-1]).astype(np.float32) if spec.boundary else None
    return {"object": obj.astype(np.float32), "classes": classes, "boundary": boundary}


def class_image(classes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(K+1, H, W) class probabilities -> uint8 class labels: 0 outside the object ``mask``, inside
    it the most probable of classes 1..K."""
    return ((np.argmax(classes[1:], axis=0) + 1) * mask).astype(np.uint8)


__all__ = ["CLASS_COLOURS", "ClassInfo", "HeadSpec", "MAX_CLASSES", "class_image", "default_classes",
           "head_of", "parse_classes", "split_logits"]
