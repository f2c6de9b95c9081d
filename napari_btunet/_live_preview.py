"""The fine-tune widget's live preview: the training thread predicts the plane on screen
(``LivePreview``), the GUI thread copies it into the plugin's preview and uncertainty layers
(``PreviewLayers``). A fresh run on strokes shows the random forest's quick preview first; the
same forest gives the uncertainty map (``btunet.pipeline.uncertainty.stroke_uncertainty``)."""
from __future__ import annotations

import time

import numpy as np

import btunet
from btunet import BTUnetError
from btunet.core.metadata import DEFAULT_THRESHOLD
from btunet.pipeline.uncertainty import stroke_uncertainty

from ._jobs import Job
from ._layers import PlaneTracker, axes_of, layer_array, prediction_colormap, spatial_shape, upsert_output

PREVIEW_KIND = "preview"
#: the random forest's quick preview, shown in the same layer before the U-Net's
FOREST_PREVIEW_KIND = "forest preview"
#: the U-Net's previews replace the forest's from the end of this epoch on: on the tuning sets
#: (BBBC007, CHO, cells3d; four annotator styles; docs/results_training_curve.md) the U-Net's Dice
#: on the painted image at the end of epoch 1 was at or above the forest's in 5 of 12 runs (0 of 4
#: on BBBC007), at the end of epoch 2 in 10 of 12
UNET_PREVIEW_EPOCH = 2
#: steps after the first U-Net preview before the ETA is shown (half the engine's pace window)
PACE_STEPS = 25
#: what the status line says while each preview is shown
FOREST_SHOWN = "quick preview (random forest) — the U-Net is training…"
UNET_SHOWN = "the preview shows the U-Net"
UNCERTAINTY_KIND = "uncertainty"
#: planes whose forest answer is kept while the user scrolls (each costs about a second to fit)
FORESTS_KEPT = 4
#: the uncertainty layer's one colour: a magenta that neither painted labels (dark red, cyan)
#: nor predictions (yellow) use, so it never changes what colour a stroke looks
UNCERTAINTY_COLOUR = (1.0, 0.2, 1.0)
#: below this entropy (bits) a pixel counts as certain: the layer is fully transparent there
CERTAIN_BELOW = 0.25
#: the layer's opacity at a coin toss: even there the image shows through
MOST_OPAQUE = 0.6
#: how the uncertainty layer is shown (with ``uncertainty_colormap``), placed just above the image,
#: below the preview and the strokes
UNCERTAINTY_STYLE = {"contrast_limits": (0.0, 1.0), "blending": "translucent", "opacity": 1.0}


def uncertainty_colormap():
    """Magenta whose alpha rises from 0 at ``CERTAIN_BELOW`` to ``MOST_OPAQUE`` at 1: certain pixels
    show the image untouched, so the map can stay on while painting."""
    from napari.utils.colormaps import Colormap
    clear, unsure = (*UNCERTAINTY_COLOUR, 0.0), (*UNCERTAINTY_COLOUR, MOST_OPAQUE)
    return Colormap(colors=[clear, clear, unsure], controls=[0.0, CERTAIN_BELOW, 1.0], name="btunet uncertainty")


class LivePreview:
    """Every ``interval_s`` seconds, predict the plane on screen with the live model.

    Runs in the training thread between steps (the engine calls ``on_progress`` there), so it
    never races the optimiser. ``btunet.Previewer`` predicts the plane as ``btunet.predict``
    would predict the whole stack (same normalisation, an eval copy of the model, so training
    is untouched). With ``uncertainty`` the plane also gets its uncertainty map: with the
    strokes (``use_strokes``, sparse runs) the entropy of the forest on those strokes (about a
    second to fit it once per plane; shown with the forest's quick preview already), else four
    test-time flips (about four times the work; the mask is the unflipped one either way). The result,
    ``(PREVIEW_KIND, index, mask, uncertainty or None)``, goes to the GUI thread through
    ``job.item``. It waits at least 3x its own duration between previews so large planes do not
    slow training much.

    After ``show_forest`` (a fresh run on strokes) the U-Net's previews wait for the end of
    epoch ``UNET_PREVIEW_EPOCH``: an earlier U-Net would replace the forest with something worse.
    """

    def __init__(self, image, rgb: bool, tracker: PlaneTracker, interval_s: float,
                 uncertainty: bool = False, threshold: float | None = DEFAULT_THRESHOLD,
                 axes: str | None = None):
        self.image, self.rgb, self.tracker, self.interval_s = image, rgb, tracker, interval_s
        self.uncertainty, self.threshold, self.axes = uncertainty, threshold, axes
        self.previewer = btunet.Previewer(image, None if axes else rgb, axes=axes)
        self._next = 0.0
        self._deadline: float | None = None
        self._cost = 0.0  # the last preview's duration
        self.count = 0
        self.seconds = 0.0
        self.first_step: int | None = None  # the training step of the first U-Net preview
        self.forest_shown = False  # the forest's preview is on screen: the U-Net waits
        self.strokes: np.ndarray | None = None
        self.forest_options: dict = {}
        self._forests: dict[tuple, btunet.Prediction | None] = {}  # the forest's answer for each plane seen

    def use_strokes(self, strokes: np.ndarray, normalization: str = "percentile", seed: int = 0) -> None:
        """This image's sparse labels: the forest on them gives the uncertainty map."""
        self.strokes, self.forest_options = strokes, {"normalization": normalization, "seed": seed}
        self._forests.clear()

    def forest(self, index: tuple) -> btunet.Prediction | None:
        """The forest's prediction of plane ``index`` (fitted once per plane, the last few kept);
        None without strokes or where they cannot teach a forest (one label only)."""
        if self.strokes is None:
            return None
        if index not in self._forests:
            try:
                result = btunet.forest_preview(self.image, self.strokes, index, rgb=None if self.axes else self.rgb,
                                               axes=self.axes, **self.forest_options)
            except BTUnetError:
                result = None
            if len(self._forests) >= FORESTS_KEPT:
                self._forests.pop(next(iter(self._forests)))
            self._forests[index] = result
        return self._forests[index]

    def prepare(self, time_budget_s: float | None = None) -> None:
        """Read what the previews need now; with a time budget, previews stop in time for the
        run to end within it."""
        self.previewer.prepare()
        now = time.perf_counter()
        self._next = now + self.interval_s
        self._deadline = now + time_budget_s if time_budget_s else None

    def show_forest(self, job: Job) -> bool:
        """Show the random forest on the strokes (``use_strokes``) at once, within about a second
        of Start; False, showing nothing, without strokes or where they cannot teach a forest (one
        label only: another pair may hold the other)."""
        index = self.tracker.index
        result = self.forest(index)
        if result is None:
            return False
        # the object mask, as the U-Net's previews show it (a class model's too), and the map
        doubt = stroke_uncertainty(result.probabilities) if self.uncertainty else None
        job.item((FOREST_PREVIEW_KIND, index, (result.labels > 0).astype(np.uint8), doubt))
        self.forest_shown = True
        return True

    def maybe(self, progress, job: Job) -> None:
        """Preview the live model of this engine ``Progress`` if it is time to."""
        now = time.perf_counter()
        if self.forest_shown:
            if not (progress.epoch_end and progress.epoch >= UNET_PREVIEW_EPOCH):
                return
            self.forest_shown = False
            self._next = now  # the U-Net replaces the forest at once
        if progress.model is None or now < self._next or job.should_stop():
            return
        if self._deadline is not None and now + self._cost > self._deadline:
            return  # it would run past the budget; the final model is previewed after training
        if self.first_step is None:
            self.first_step = progress.step
        self.run(progress.model, job)

    def pace_includes_previews(self, progress, steps: int = PACE_STEPS) -> bool:
        """Whether the engine's ETA (the pace of its latest steps) already counts the previews: up
        to a quarter of a run's time once they start (each waits 3x its duration), none before the
        U-Net's first, so an earlier estimate came out 39 % short on the sample."""
        if self.first_step is None:  # no U-Net preview by now: none is coming to be counted
            return progress.epoch > UNET_PREVIEW_EPOCH + 1
        return progress.step >= self.first_step + steps

    def run(self, model, job: Job) -> None:
        start = time.perf_counter()
        index = self.tracker.index
        forest = self.forest(index) if self.uncertainty else None
        result = self.previewer(model, index, threshold=self.threshold, uncertainty=self.uncertainty,
                                forest=None if forest is None else forest.probabilities)
        job.item((PREVIEW_KIND, index, result.labels, result.uncertainty))
        cost = self._cost = time.perf_counter() - start
        self.count += 1
        self.seconds += cost
        self._next = time.perf_counter() + max(self.interval_s, 3 * cost)


class PreviewLayers:
    """The layers a live preview fills: ``"<image> preview [btunet]"`` (labels) and, with
    ``uncertainty``, ``"<image> uncertainty [btunet]"`` (an image), plus the plane tracker.

    Made on the GUI thread at Start; the selected layer stays selected, so the user's brush
    stays where it was.
    """

    def __init__(self, viewer, image, uncertainty: bool):
        self.viewer, self.image, self.uncertainty = viewer, image, uncertainty
        keep_active = viewer.layers.selection.active
        self.preview_layer = upsert_output(
            viewer, image, PREVIEW_KIND, np.zeros(spatial_shape(image), np.uint8), "labels",
            opacity=0.45, colormap=prediction_colormap(instances=False))
        self.uncertainty_layer = None
        if uncertainty:
            self.uncertainty_layer = upsert_output(
                viewer, image, UNCERTAINTY_KIND, np.zeros(spatial_shape(image), np.float32),
                "image", colormap=uncertainty_colormap(), **UNCERTAINTY_STYLE)
            layers = viewer.layers  # just above the image: the preview and the strokes stay on top
            layers.move(layers.index(self.uncertainty_layer), layers.index(image) + 1)
        if keep_active is not None and keep_active in viewer.layers:
            viewer.layers.selection.active = keep_active  # keep the user's brush where it was
        self.tracker: PlaneTracker | None = PlaneTracker(viewer, image)

    def live_preview(self, interval_s: float, threshold: float = DEFAULT_THRESHOLD) -> LivePreview:
        """The training-thread side, predicting the plane this tracker follows."""
        return LivePreview(layer_array(self.image), bool(self.image.rgb), self.tracker, interval_s,
                           self.uncertainty, threshold, axes=axes_of(self.image))

    def show(self, index: tuple, mask: np.ndarray, doubt: np.ndarray | None) -> tuple[bool, bool]:
        """Show one previewed plane; whether the mask and the uncertainty map were shown."""
        shown = self._show_plane(self.preview_layer, index, mask)
        return shown, doubt is not None and self._show_plane(self.uncertainty_layer, index, doubt)

    def _show_plane(self, layer, index: tuple, plane: np.ndarray) -> bool:
        """Copy one previewed plane into the plugin's layer, if that layer is still there."""
        if layer is None or layer not in self.viewer.layers or layer.data.shape[len(index):] != plane.shape:
            return False
        layer.data[index] = plane
        layer.refresh()
        return True

    def stop_tracking(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def remove_empty(self) -> None:
        """Remove the layers nothing was previewed into (the run failed)."""
        for layer in (self.preview_layer, self.uncertainty_layer):
            if layer is not None and layer in self.viewer.layers and not layer.data.any():
                self.viewer.layers.remove(layer)
