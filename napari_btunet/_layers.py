"""Napari layers as the plugin sees them: their pixels, the plugin's own output layers (found by
metadata, never by name alone), the plane on screen, and layer-list changes."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

#: metadata keys that mark (and identify) the layers this plugin writes
OUTPUT_KEY = "btunet_output"
KIND_KEY = "btunet_kind"
SOURCE_KEY = "btunet_source"
SUFFIX = "[btunet]"
#: metadata key of an image layer's axes (``btunet.io.axes``, e.g. "TZYX"), set by the Axes row
AXES_KEY = "btunet_axes"


#: the colour of predicted objects (binary masks and the live preview): a yellow that painted
#: labels never have in napari's default colours (1 = background is a dark red, 2 = object a cyan)
OBJECT_COLOUR = (1.0, 0.85, 0.1, 1.0)
#: instance colours: warm yellows, oranges, greens, magentas and a deep blue, all far from the
#: painted red and cyan, so a prediction never looks like a painted stroke
INSTANCE_COLOURS = ((1.0, 0.85, 0.1), (0.55, 0.95, 0.2), (0.95, 0.3, 0.85), (1.0, 0.55, 0.1),
                    (0.6, 0.4, 1.0), (0.2, 0.8, 0.35), (1.0, 0.6, 0.75), (0.85, 0.75, 0.3),
                    (0.95, 0.95, 0.75), (0.25, 0.4, 1.0), (0.75, 1.0, 0.55), (0.8, 0.2, 0.55))


def prediction_colormap(instances: bool):
    """The colormap of a predicted labels layer: one yellow for a binary mask, a cycle of
    non-painted colours for instances; 0 is transparent."""
    from napari.utils.colormaps import CyclicLabelColormap, DirectLabelColormap
    if not instances:
        return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: OBJECT_COLOUR})
    colours = np.array([(0, 0, 0, 0)] + [(*c, 1.0) for c in INSTANCE_COLOURS], np.float32)
    return CyclicLabelColormap(colors=colours, background_value=0)


def layer_array(layer) -> Any:
    """The full-resolution data of a layer (level 0 of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def axes_of(layer) -> str | None:
    """The axes the Axes row gave this layer, if they still fit its data (else None)."""
    axes = getattr(layer, "metadata", {}).get(AXES_KEY)
    if not axes:
        return None
    from btunet.io.axes import check_axes
    try:
        return check_axes(axes, layer_array(layer).shape)
    except ValueError:
        return None


def spatial_shape(layer) -> tuple[int, ...]:
    """Shape without the colour axis: of an RGB(A) image layer, or the C of the layer's axes."""
    shape = tuple(layer_array(layer).shape)
    axes = axes_of(layer)
    if axes is not None:
        return tuple(n for n, c in zip(shape, axes, strict=True) if c != "C")
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def is_output(layer) -> bool:
    return bool(layer.metadata.get(OUTPUT_KEY, False))


def output_name(source_name: str, kind: str) -> str:
    return f"{source_name} {kind} {SUFFIX}"


def find_output(viewer, source_name: str, kind: str):
    """The plugin's own output layer of this kind for this source, if there is one.

    A layer counts only when it carries the plugin's metadata (so a user layer with the same
    name is never touched) and either has the expected name or records the same source.
    """
    expected = output_name(source_name, kind)
    for layer in viewer.layers:
        md = layer.metadata
        if md.get(OUTPUT_KEY) and md.get(KIND_KEY) == kind and (
                layer.name == expected or md.get(SOURCE_KEY) == source_name):
            return layer
    return None


def plane_geometry(layer) -> dict:
    """``scale`` and ``translate`` of a layer's axes without C: those of its labels and outputs."""
    axes = axes_of(layer)
    keep = range(layer.ndim) if axes is None or getattr(layer, "rgb", False) else [
        i for i, c in enumerate(axes) if c != "C"]
    return {"scale": tuple(layer.scale[i] for i in keep), "translate": tuple(layer.translate[i] for i in keep)}


def upsert_output(viewer, source, kind: str, data: np.ndarray, layer_type: str, **kwargs):
    """Create or update the output layer ``"<source> <kind> [btunet]"``, aligned with ``source``."""
    from napari.layers import Image, Labels
    cls = Labels if layer_type == "labels" else Image
    geometry = plane_geometry(source)
    layer = find_output(viewer, source.name, kind)
    if layer is not None and isinstance(layer, cls) and layer.ndim == data.ndim:
        layer.data = data
        layer.scale, layer.translate = geometry["scale"], geometry["translate"]
        for key in ("colormap", "contrast_limits"):  # e.g. binary mask -> instances
            if key in kwargs:
                setattr(layer, key, kwargs[key])
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    metadata = {OUTPUT_KEY: True, KIND_KEY: kind, SOURCE_KEY: source.name}
    add = viewer.add_labels if layer_type == "labels" else viewer.add_image
    return add(data, name=output_name(source.name, kind), metadata=metadata, **geometry, **kwargs)


class PlaneTracker:
    """The plane of ``layer`` the viewer shows now, for the training thread to read.

    Updated on the GUI thread from ``viewer.dims.events.current_step``; ``index`` is read
    from any thread (a tuple is replaced atomically, and a lock guards it anyway).
    """

    def __init__(self, viewer, layer):
        self.viewer, self.layer = viewer, layer
        self._lock = threading.Lock()
        self._index: tuple = ()
        self.update()
        viewer.dims.events.current_step.connect(self.update)

    @property
    def index(self) -> tuple:
        with self._lock:
            return self._index

    def update(self, event=None) -> None:
        leading = spatial_shape(self.layer)[:-2]
        axes = axes_of(self.layer)  # the plane axes' places among the data axes
        dims = [i for i, c in enumerate(axes) if c in "TZ"] if axes else list(range(len(leading)))
        index: tuple = ()
        if leading:
            coords = np.asarray(self.layer.world_to_data(self.viewer.dims.point), float)
            index = tuple(int(np.clip(round(coords[d]), 0, n - 1)) for d, n in zip(dims, leading, strict=True))
        with self._lock:
            self._index = index

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the viewer may already be closed
            self.viewer.dims.events.current_step.disconnect(self.update)


def watch_layers(viewer, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` when layers are added, removed or renamed; returns a disconnect function.

    A bound method is held weakly, so the viewer never keeps a closed widget alive.
    """
    import weakref
    ref = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else (lambda: callback)

    def on_change(event=None):
        target = ref()
        if target is not None:
            with contextlib.suppress(RuntimeError):  # the Qt side is already gone
                target()

    def on_inserted(event=None):
        if event is not None and hasattr(event, "value"):
            event.value.events.name.connect(on_change)
        on_change()

    for layer in viewer.layers:
        layer.events.name.connect(on_change)
    viewer.layers.events.inserted.connect(on_inserted)
    viewer.layers.events.removed.connect(on_change)

    def disconnect():
        for signal, slot in ((viewer.layers.events.inserted, on_inserted),
                             (viewer.layers.events.removed, on_change)):
            with contextlib.suppress(Exception):  # best-effort clean-up
                signal.disconnect(slot)
        for layer in viewer.layers:
            with contextlib.suppress(Exception):  # best-effort clean-up
                layer.events.name.disconnect(on_change)
    return disconnect
