"""Predict widget: the session model (or a checkpoint) over every ticked image layer, plane by
plane, into the plugin's own output layers "<source> labels [btunet]" / "<source> probability [btunet]"."""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari.layers import Image
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QVBoxLayout

import btunet
from btunet import BTUnetError, PredictConfig
from btunet.core.metadata import DEFAULT_THRESHOLD

from . import _messages
from ._axes_row import AxesRow, engine_axes
from ._classes import model_classes, show_classes
from ._controls import PathField, add_device_row, describe_checkpoint, hint, setting_spin
from ._job_widget import JobWidget
from ._jobs import Job, Outcome
from ._layers import SOURCE_KEY, layer_array, prediction_colormap, upsert_output, watch_layers
from ._pickers import LayerChecklist
from ._session import session

MODEL_CHOICES = ("current model", "from file")
OUTPUT_CHOICES = ("binary mask", "instances", "instances per plane")
#: what each labels choice does, shown under the combo box
OUTPUT_HINTS = {"binary mask": "0 = background, 1 = object (a class model: class ids)",
                "instances": ("one id per object; on a stack with a Z axis (see Axes) an object keeps its id "
                              "through the Z planes; a T axis is never linked"),
                "instances per plane": "one id per object in each plane; ids are not linked across Z"}


@dataclass
class Source:
    layer: Any            # only touched on the GUI thread
    name: str
    data: Any
    rgb: bool
    axes: str | None = None  # btunet.io.axes letters; None: the engine's default rule
    z_spacing: float = 1.0  # the layer's Z scale over its X scale (3-D instance seeds)


def z_spacing_of(layer, axes: str | None = None) -> float:
    """Z step / pixel width from a layer's scale (1 for a 2-D layer or an unusable scale); with
    ``axes`` naming every axis of the layer, Z is where the axes say."""
    scale = [float(s) for s in getattr(layer, "scale", ())]
    if axes and "Z" in axes and len(axes) == len(scale):
        z, x = scale[axes.index("Z")], scale[axes.index("X")]
        return z / x if z > 0 and x > 0 else 1.0
    spatial = scale[:-1] if getattr(layer, "rgb", False) else scale
    if len(spatial) < 3 or not spatial[-1] > 0 or not spatial[-3] > 0:
        return 1.0
    return spatial[-3] / spatial[-1]


def channel_note(name: str, model, data, axes: str | None, rgb: bool | None) -> str | None:
    """How the engine fitted a layer's channels to the model's (``btunet.io.imageio.to_channels``),
    in a sentence, when it changed them: colour averaged to grey, or grey copied into colour."""
    from btunet.pipeline.planes import engine_image
    wanted = getattr(model, "in_channels", None)
    if wanted is None:
        return None
    image, colour = engine_image(data, axes, rgb, wanted)
    if not colour:
        return (f"{name!r} is grey: copied into the {wanted} colour channels the model reads."
                if wanted > 1 else None)
    have = int(image.shape[-1])
    if have == wanted or min(have, 3) == wanted:  # as it is, or RGBA without its alpha
        return None
    if wanted == 1:
        return f"{name!r} was turned grey (the mean of its colour channels): the model reads grey images."
    return f"{name!r}: the mean of its {have} channels was copied into the {wanted} the model reads."


@dataclass
class PredictRequest:
    model: Any           # a model object or a checkpoint path
    sources: list
    threshold: float
    instances: bool
    probabilities: bool
    device: str
    instances_3d: bool | None = None  # False: per plane; None: 3-D on a (Z, Y, X) stack
    tta: bool = False  # average four flips of every plane


class PredictWidget(JobWidget):
    """Segment every ticked image layer with the current (or a saved) model."""

    stopping_text = "stopping after this plane…"
    activity = "Prediction"
    tab_title = "Predict"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.written: list = []
        self.unlike: list[str] = []  # layers of the last run unlike the model's training images
        self._sources: list = []
        self._instances = False
        self._build()
        self._sync_model()
        self.follow_session(session, "_session_changed")
        self.on_close(watch_layers(self.viewer, self._layers_changed))
        self.layers_list.list.itemChanged.connect(self._follow_first)
        self._follow_first()

    def _build(self) -> None:
        self.run_button = self.add_start_cancel("Predict")
        layout = self.body
        model_box = QGroupBox("Model")
        form = QFormLayout(model_box)
        self.model_combo = QComboBox()
        self.model_combo.addItems(MODEL_CHOICES)
        self.model_combo.currentTextChanged.connect(self._sync_model)
        form.addRow("model", self.model_combo)
        self.model_file = PathField("open", file_filter="Models (*.safetensors *.zip)",
                                    placeholder="fine-tuned model (.safetensors or exported .zip)")
        self.model_file.changed.connect(self._sync_model)
        form.addRow(self.model_file)
        self.model_label = hint("")
        form.addRow(self.model_label)
        layout.addWidget(model_box)

        images = QGroupBox("Image layers")
        box = QVBoxLayout(images)
        self.layers_list = LayerChecklist(self.viewer, Image)
        box.addWidget(self.layers_list)
        self.axes_row = AxesRow(self.viewer)  # of the first ticked layer
        box.addWidget(self.axes_row)
        box.addWidget(hint("2-D, 2-D+t, 3-D or RGB; predicted plane by plane (T, Z); C is the "
                           "model's input channels"))
        layout.addWidget(images)

        options = QGroupBox("Output")
        form = QFormLayout(options)
        # the model's own threshold once one is chosen (_sync_model)
        self.threshold_spin = setting_spin(PredictConfig, "threshold", DEFAULT_THRESHOLD, step=0.05)
        form.addRow("threshold", self.threshold_spin)
        self.output_combo = QComboBox()
        self.output_combo.addItems(OUTPUT_CHOICES)
        form.addRow("labels", self.output_combo)
        self.output_hint = hint(OUTPUT_HINTS[OUTPUT_CHOICES[0]])
        self.output_combo.currentTextChanged.connect(lambda text: self.output_hint.setText(OUTPUT_HINTS[text]))
        form.addRow(self.output_hint)
        self.probability_check = QCheckBox("also add the object probability")
        form.addRow(self.probability_check)
        self.tta_check = QCheckBox("average four flips (4x time, smoother edges)")
        self.tta_check.setToolTip("test-time augmentation: every plane is predicted as it is and flipped "
                                  "left-right, up-down and both, and the four results are averaged")
        form.addRow(self.tta_check)
        self.device_combo, self.device_label = add_device_row(form)
        layout.addWidget(options)

        layout.addStretch(1)

    # ------------------------------------------------------------------ state
    def _layers_changed(self) -> None:
        self.layers_list.refresh()
        self._follow_first()

    def _follow_first(self, *_: Any) -> None:
        ticked = self.layers_list.layers()
        self.axes_row.follow(ticked[0] if ticked else None)

    def _session_changed(self, what: str) -> None:
        if what == "model":
            self._sync_model()

    def _sync_model(self, *_: Any) -> None:
        """Show what the chosen model is, and start from the threshold saved with it."""
        choice = self.model_combo.currentText()
        self.model_file.setVisible(choice == "from file")
        if choice == "current model":
            text = session.describe_model()
            if session.model is not None:
                try:
                    self.threshold_spin.setValue(btunet.model_metadata(session.model).threshold)
                except BTUnetError as exc:
                    text = _messages.sentence(exc)
            self.model_label.setText(text)
            return
        text, meta = describe_checkpoint(self.model_file.path(), "model")
        self.model_label.setText(text)
        if meta is not None and meta.get("kind") == "model":  # the model's own threshold
            self.threshold_spin.setValue(meta.get("threshold", DEFAULT_THRESHOLD))

    def _request(self) -> PredictRequest:
        if self.model_combo.currentText() == "current model":
            if session.model is None:
                raise BTUnetError("there is no model in this session yet; fine-tune one or "
                                  "choose 'from file'")
            model: Any = session.model
        else:
            model = self.model_file.path()
            if model is None:
                raise BTUnetError("choose a model file")
        layers = self.layers_list.layers()
        if not layers:
            raise BTUnetError("tick at least one image layer")
        if self.axes_row.layer is not None and not self.axes_row.apply():
            raise BTUnetError(f"the axes of {self.axes_row.layer.name!r}: {self.axes_row.note.text()}")
        sources = [Source(layer, layer.name, layer_array(layer), bool(layer.rgb), engine_axes(layer),
                          z_spacing_of(layer, engine_axes(layer))) for layer in layers]
        output = self.output_combo.currentText()
        return PredictRequest(model, sources, self.threshold_spin.value(), output.startswith("instances"),
                              self.probability_check.isChecked(), self.device_combo.currentText(),
                              False if output == "instances per plane" else None, self.tta_check.isChecked())

    # ------------------------------------------------------------------ run
    def start(self) -> Job | None:
        request = self.take_request()
        if request is None:
            return None
        self.written, self.unlike = [], []
        self._sources, self._instances = request.sources, request.instances
        self._classes = None if request.instances else model_classes(request.model)
        self.progress.set_fraction(0, "loading the model…")
        self._set_running(True)
        return self.run_job(Job(lambda job: self._predict(job, request), self._done,
                                on_progress=self._on_progress, on_item=self._on_item))

    @staticmethod
    def _predict(job: Job, request: PredictRequest) -> int:
        """Runs in the worker thread; each finished layer goes to the GUI thread at once."""
        model = request.model
        if isinstance(model, (str, Path)):
            model = btunet.load_model(model)
        n = len(request.sources)
        for k, source in enumerate(request.sources):
            def on_progress(done: int, total: int, k=k, name=source.name) -> None:
                job.progress((k, n, done, total, name))
            job.progress((k, n, 0, 1, source.name))
            rgb = None if source.axes else source.rgb  # the axes' C is the colour axis
            # an image unlike the model's training images: the engine's warning would not name the
            # layer (napari shows warnings too), so only the notification of _on_item says it
            warnings.filterwarnings("ignore", category=btunet.OutsideReferenceWarning, module=re.escape(__name__))
            result = btunet.predict(model, source.data, rgb=rgb, axes=source.axes, threshold=request.threshold,
                                    instances=request.instances, instances_3d=request.instances_3d,
                                    z_spacing=source.z_spacing, probabilities=request.probabilities,
                                    device=request.device, tta=request.tta, on_progress=on_progress,
                                    should_stop=job.should_stop)
            job.item((k, result, channel_note(source.name, model, source.data, source.axes, rgb)))
            if job.should_stop() and k < n - 1:
                raise btunet.Cancelled(f"prediction cancelled after {k + 1} of {n} layers")
        return n

    def _on_progress(self, value) -> None:
        k, n, done, total, name = value
        self.progress.report((k + done / max(1, total)) / n,
                             f"layer {k + 1}/{n} ({name}): plane {done}/{total}")

    def _on_item(self, item) -> None:
        k, result, note = item
        source = self._sources[k].layer
        if note:
            _messages.show_info(note)
        if result.outside_reference:  # the engine's words, with the layer's name
            self.unlike.append(self._sources[k].name)
            _messages.show_warning(f"{self._sources[k].name!r}: {result.outside_reference}")
        if source not in self.viewer.layers:
            return  # the source was closed meanwhile
        labels = upsert_output(self.viewer, source, "labels", result.labels, "labels", opacity=0.5,
                               colormap=prediction_colormap(self._instances))
        if getattr(self, "_classes", None):
            show_classes(labels, self._classes)
        self.written.append(labels)
        if result.probabilities is not None:
            prob = upsert_output(self.viewer, source, "probability", result.probabilities, "image",
                                 colormap="magma", opacity=0.6, contrast_limits=(0.0, 1.0))
            self.written.append(prob)

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _done(self, outcome: Outcome) -> None:
        self._set_running(False)
        self._sources = []
        if outcome.error is not None and outcome.cancelled:
            kept = len({layer.metadata.get(SOURCE_KEY) for layer in self.written})
            self.progress.set_text(f"cancelled; {kept} finished layer(s) kept")
            _messages.show_info(f"Prediction cancelled; {kept} finished layer(s) were kept.")
            return
        if outcome.error is not None:
            self.failed(outcome.error)
            return
        self.progress.set_fraction(1.0, f"done: {outcome.result} layer(s)" + (
            f"; {len(self.unlike)} unlike the training images" if self.unlike else ""))
