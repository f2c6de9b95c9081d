"""Class models in the viewer: the classes a model holds and a Labels colormap for its output.

Class k is drawn in the model's colour for k (gold, sky blue, ...), never in napari's default
colour of label k, so a predicted class never looks like the annotation's background (label 1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def model_classes(model: Any) -> list[dict] | None:
    """The ``classes`` metadata of a model object or file when it holds two or more classes."""
    if isinstance(model, (str, Path)):
        import btunet
        try:
            meta = btunet.read_metadata(model)
        except btunet.BTUnetError:  # the prediction job reports the unreadable file itself
            return None
    else:
        meta = getattr(model, "metadata", None) or {}
    classes = meta.get("classes") or []
    return list(classes) if len(classes) >= 2 else None


def class_colormap(classes: list[dict]):
    """A napari colormap: 0 transparent, class k in its stored colour."""
    from napari.utils.colormaps import DirectLabelColormap
    colours = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    colours.update({int(c["id"]): c["colour"] for c in classes})
    return DirectLabelColormap(color_dict=colours)


def show_classes(layer, classes: list[dict]) -> None:
    """Colour a class Labels layer and name its classes in the layer's metadata."""
    layer.colormap = class_colormap(classes)
    layer.metadata["btunet_classes"] = {int(c["id"]): c["name"] for c in classes}


def class_dice_text(values: list | None) -> str:
    """' · class Dice 0.91/0.84' for the status line of a class model's training."""
    if not values:
        return ""
    return " · class Dice " + "/".join(f"{v:.2f}" for v in values)
