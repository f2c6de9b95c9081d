"""Fine-tune widget: (image, labels) pairs -> one FinetuneConfig -> ``btunet.finetune`` in a worker,
with a live loss / validation-Dice plot and a live preview (and uncertainty map) of the plane on screen."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox,
                            QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget)

import btunet
from btunet import BTUnetError, FinetuneConfig
from btunet.annotations import CONVENTIONS, MASK_MODES
from btunet.imageio import to_channels
from btunet.normalize import normalize_plane, percentile_range
from btunet.predict import predict_logits, uncertainty_map

from . import _common
from ._common import (Job, LayerCombo, LivePlot, Outcome, PathField, PlaneTracker, ProgressPanel,
                      hint, layer_array, sentence,
                      snapshot, spatial_shape, upsert_output, watch_layers)
from ._export_button import export_button
from ._session import session

ENCODER_CHOICES = ("last pre-trained", "from file", "none")
LENGTH_CHOICES = ("epochs", "time budget")
PREVIEW_KIND = "preview"
UNCERTAINTY_KIND = "uncertainty"
#: how the uncertainty layer is shown: bright = unsure (paint there next), black adds nothing
UNCERTAINTY_STYLE = dict(colormap="magma", contrast_limits=(0.0, 1.0), blending="additive", opacity=0.6)


class PairRow(QWidget):
    """One (image layer, labels layer) pair with a live shape check."""

    def __init__(self, viewer, on_remove, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.viewer = viewer
        self.image = LayerCombo(viewer, Image)
        self.labels = LayerCombo(viewer, Labels)
        self.remove = QPushButton("✕")
        self.remove.setFixedWidth(26)
        self.remove.setToolTip("remove this pair")
        self.remove.clicked.connect(lambda: on_remove(self))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #f0a050")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("image"))
        row.addWidget(self.image, 1)
        row.addWidget(QLabel("labels"))
        row.addWidget(self.labels, 1)
        row.addWidget(self.remove)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(1)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.image.currentTextChanged.connect(self._image_changed)
        self.labels.currentTextChanged.connect(self.check)
        self._image_changed()

    def _image_changed(self, *_: Any) -> None:
        image, labels = self.image.layer(), self.labels.layer()
        if image is not None and (labels is None or spatial_shape(labels) != spatial_shape(image)):
            match = matching_labels(self.viewer, image)
            if match is not None:
                self.labels.set_layer(match)
        self.check()

    def refresh(self) -> None:
        self.image.refresh()
        self.labels.refresh()
        self.check()

    def problem(self) -> Optional[str]:
        """None if the pair can be trained on, else a sentence saying what is wrong."""
        image, labels = self.image.layer(), self.labels.layer()
        if image is None:
            return "Choose an image layer."
        if labels is None:
            return (f"Choose a labels layer for {image.name!r} (add one with "
                    "'New annotation layer' and paint on it).")
        img_shape, lab_shape = spatial_shape(image), spatial_shape(labels)
        if img_shape != lab_shape:
            rgb = " (without its colour axis)" if image.rgb else ""
            return (f"Labels {labels.name!r} have shape {lab_shape} but image {image.name!r} has "
                    f"shape {img_shape}{rgb}; they must match.")
        if len(img_shape) < 2:
            return f"Image {image.name!r} needs at least two spatial axes."
        return None

    def check(self, *_: Any) -> None:
        problem = self.problem()
        self.status.setText(problem or "")
        self.status.setVisible(bool(problem))


def matching_labels(viewer, image):
    """A labels layer the same shape as ``image``, preferring one named like an annotation."""
    shape = spatial_shape(image)
    found = [layer for layer in viewer.layers if isinstance(layer, Labels)
             and not _common.is_output(layer) and spatial_shape(layer) == shape]
    found.sort(key=lambda layer: ("annot" not in layer.name.lower(),
                                  not layer.name.startswith(image.name)))
    return found[0] if found else None


class LivePreview:
    """Every ``interval_s`` seconds, predict the plane on screen with the live model.

    Runs in the training thread between steps (the engine calls ``on_progress`` there), so it
    never races the optimiser; the model is put in eval mode for the prediction (as
    ``btunet.finetune.validate`` does) and back in train mode after. With ``uncertainty`` the
    plane also gets ``btunet.predict.uncertainty_map`` (four test-time flips, so about four
    times the work; the mask then comes from the unflipped probability, the same as without).
    The result, ``(PREVIEW_KIND, index, mask, uncertainty or None)``, goes to the GUI thread
    through ``job.item``. It waits at least 3x its own duration between previews so large
    planes do not slow training much.
    """

    def __init__(self, image, rgb: bool, tracker: PlaneTracker, interval_s: float,
                 uncertainty: bool = False):
        self.image, self.rgb, self.tracker, self.interval_s = image, rgb, tracker, interval_s
        self.uncertainty = uncertainty
        self.lo, self.hi = 0.0, 1.0
        self._cache: dict[tuple, np.ndarray] = {}
        self._next = 0.0
        self.count = 0
        self.seconds = 0.0

    def prepare(self) -> None:
        self.lo, self.hi = percentile_range(self.image, self.rgb)
        self._next = time.perf_counter() + self.interval_s

    def _pixels(self, index: tuple, channels: int) -> np.ndarray:
        key = (index, channels)
        if key not in self._cache:
            plane = self.image[index] if index else self.image
            plane = np.asarray(plane.compute() if hasattr(plane, "compute") else plane)
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = to_channels(normalize_plane(plane, self.lo, self.hi), self.rgb, channels)
        return self._cache[key]

    def maybe(self, model, job: Job) -> None:
        if model is not None and time.perf_counter() >= self._next and not job.should_stop():
            self.run(model, job)

    def run(self, model, job: Job) -> None:
        start = time.perf_counter()
        index = self.tracker.index
        pixels = self._pixels(index, model.in_channels)
        was_training = model.training
        model.eval()
        try:
            if self.uncertainty:
                probability, doubt = uncertainty_map(model, pixels, fast=True)
                mask = probability > 0.5
            else:
                mask, doubt = predict_logits(model, pixels, fast=True) > 0, None
        finally:
            if was_training:
                model.train()
        job.item((PREVIEW_KIND, index, mask.astype(np.uint8), doubt))
        cost = time.perf_counter() - start
        self.count += 1
        self.seconds += cost
        self._next = time.perf_counter() + max(self.interval_s, 3 * cost)


@dataclass
class Request:
    """Everything a fine-tuning run needs, captured on the GUI thread at Start."""
    images: list
    labels: list
    config: FinetuneConfig
    encoder: Any = None
    resume: Any = None
    path: Optional[Path] = None
    preview: Optional[LivePreview] = None


class FinetuneWidget(_common.JobWidget):
    """Train a U-Net variant on painted labels, preview it live, keep it in the session."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.pairs: list[PairRow] = []
        self.tracker: Optional[PlaneTracker] = None
        self.preview_layer = None
        self.uncertainty_layer = None
        self.last_outcome: Optional[Outcome] = None
        self.last_progress = None  # the latest engine Progress (without the model)
        self._budget: Optional[float] = None
        self.previewed: list[tuple] = []
        self.uncertainty_shown: list[tuple] = []
        #: epochs the user typed, for a fresh run and for a continuation; None = the engine default
        self._epochs: dict[str, Optional[int]] = {"fresh": None, "continue": None}
        self._showing_epochs = False
        self._build()
        self.add_pair()
        self._sync_encoder()
        self._sync_session_model()
        self.follow_session(session, "_session_changed")
        self.on_close(watch_layers(self.viewer, self._layers_changed))

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        layout = self.body

        data = QGroupBox("Training data")
        data_layout = QVBoxLayout(data)
        self.pairs_box = QVBoxLayout()
        data_layout.addLayout(self.pairs_box)
        buttons = QHBoxLayout()
        self.add_pair_button = QPushButton("Add pair")
        self.add_pair_button.clicked.connect(lambda: self.add_pair())
        self.new_labels_button = QPushButton("New annotation layer")
        self.new_labels_button.setToolTip("an empty labels layer for the first pair's image, "
                                          "ready to paint 2 = object, 1 = background")
        self.new_labels_button.clicked.connect(self.new_annotation_layer)
        buttons.addWidget(self.add_pair_button)
        buttons.addWidget(self.new_labels_button)
        data_layout.addLayout(buttons)
        form = QFormLayout()
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(MASK_MODES)
        self.mode_combo.currentTextChanged.connect(self._mode_changed)
        form.addRow("annotation", self.mode_combo)
        data_layout.addLayout(form)
        self.convention_label = hint("")
        data_layout.addWidget(self.convention_label)
        self._mode_changed(self.mode_combo.currentText())
        layout.addWidget(data)

        model_box = QGroupBox("Model")
        form = QFormLayout(model_box)
        self.encoder_combo = QComboBox()
        self.encoder_combo.addItems(ENCODER_CHOICES)
        self.encoder_combo.setCurrentText("none")
        self.encoder_combo.currentTextChanged.connect(self._sync_encoder)
        form.addRow("encoder", self.encoder_combo)
        self.encoder_file = PathField("open", placeholder="pre-trained encoder (.safetensors)")
        self.encoder_file.edit.editingFinished.connect(self._sync_encoder)
        form.addRow("", self.encoder_file)
        self.encoder_label = hint("")
        form.addRow("", self.encoder_label)
        self.variant_combo = QComboBox()
        self.variant_combo.addItems(list(btunet.MODELS))
        form.addRow("variant", self.variant_combo)
        self.resume_check = QCheckBox("continue from the current model")
        self.resume_check.setToolTip("paint more (corrections where the preview is wrong), then "
                                     "Start: a short warm start from the current weights (its "
                                     "variant) at half the learning rate, focused on painted "
                                     "pixels the model gets wrong")
        self.resume_check.toggled.connect(self._show_epochs)
        form.addRow("", self.resume_check)
        self.model_label = hint("")
        form.addRow("", self.model_label)
        layout.addWidget(model_box)

        train = QGroupBox("Training")
        form = QFormLayout(train)
        length = QHBoxLayout()
        self.length_combo = QComboBox()
        self.length_combo.addItems(LENGTH_CHOICES)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 100000)
        self.epochs_spin.valueChanged.connect(self._epochs_edited)
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(0.1, 10000)
        self.budget_spin.setDecimals(1)
        self.budget_spin.setValue(5.0)
        self.budget_spin.setSuffix(" min")
        self.length_combo.currentTextChanged.connect(self._length_changed)
        length.addWidget(self.length_combo)
        length.addWidget(self.epochs_spin)
        length.addWidget(self.budget_spin)
        form.addRow("train for", length)
        self.length_label = hint("")
        form.addRow("", self.length_label)
        self.output_file = PathField("save", placeholder="optional: save the model here")
        form.addRow("model file", self.output_file)
        self.device_combo, self.device_label = _common.add_device_row(form)
        self.advanced, adv = _common.collapsible("Advanced")
        self.steps_spin = _spin(1, 100000, FinetuneConfig.steps_per_epoch)
        adv.addRow("steps per epoch", self.steps_spin)
        self.batch_spin = _spin(1, 256, FinetuneConfig.batch_size)
        adv.addRow("batch size", self.batch_spin)
        self.patch_spin = _spin(32, 1024, FinetuneConfig.patch_size, step=16)
        adv.addRow("patch size", self.patch_spin)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1e-1)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(FinetuneConfig.lr)
        adv.addRow("learning rate", self.lr_spin)
        self.preview_spin = QDoubleSpinBox()
        self.preview_spin.setRange(0, 600)
        self.preview_spin.setDecimals(1)
        self.preview_spin.setValue(3.0)
        self.preview_spin.setSuffix(" s")
        self.preview_spin.setToolTip("predict the plane on screen this often while training (0 = off)")
        adv.addRow("preview every", self.preview_spin)
        self.uncertainty_check = QCheckBox("show uncertainty (where to paint next)")
        self.uncertainty_check.setChecked(True)
        self.uncertainty_check.setToolTip(
            "the live preview also shows how unsure the model is (bright = unsure, from four "
            "flipped predictions) in '<image> uncertainty [btunet]'; paint corrections where it "
            "is bright and the preview is wrong, then Start again to continue")
        form.addRow("", self.uncertainty_check)
        # the map is computed by the live preview: nothing to show while the preview is off
        self.preview_spin.valueChanged.connect(lambda value: self.uncertainty_check.setEnabled(value > 0))
        form.addRow(self.advanced)
        layout.addWidget(train)
        self._length_changed(self.length_combo.currentText())
        self._show_epochs()

        buttons, self.start_button = self.add_start_cancel(layout, "Start")
        self.save_button = QPushButton("Save model…")
        self.save_button.clicked.connect(self._save_clicked)
        buttons.addWidget(self.save_button)
        self.export_button = export_button(self, lambda: session.model)
        buttons.addWidget(self.export_button)
        self.progress = ProgressPanel()
        layout.addWidget(self.progress)
        self.plot = LivePlot(right_label="val Dice")
        layout.addWidget(self.plot)
        layout.addStretch(1)

    # ------------------------------------------------------------------ pairs
    def add_pair(self, image=None, labels=None) -> PairRow:
        row = PairRow(self.viewer, self.remove_pair)
        used = {p.image.currentText() for p in self.pairs}
        if image is None:
            image = next((layer for layer in row.image.candidates() if layer.name not in used), None)
        if image is not None:
            row.image.set_layer(image)
            if labels is None:
                labels = matching_labels(self.viewer, image)
        if labels is not None:
            row.labels.set_layer(labels)
        self.pairs.append(row)
        self.pairs_box.addWidget(row)
        row.check()
        return row

    def remove_pair(self, row: PairRow) -> None:
        if row in self.pairs:
            self.pairs.remove(row)
            self.pairs_box.removeWidget(row)
            row.deleteLater()

    def set_pairs(self, pairs) -> None:
        """Replace all pairs with these (image layer, labels layer) tuples."""
        for row in list(self.pairs):
            self.remove_pair(row)
        for image, labels in pairs:
            self.add_pair(image, labels)

    def new_annotation_layer(self):
        """An empty uint8 labels layer aligned with the first pair's image, ready to paint."""
        row = self.pairs[0] if self.pairs else self.add_pair()
        image = row.image.layer()
        if image is None:
            _common.show_warning("Open an image first, then add an annotation layer for it.")
            return None
        layer = self.viewer.add_labels(
            np.zeros(spatial_shape(image), np.uint8), name=f"{image.name} annotation",
            scale=tuple(image.scale), translate=tuple(image.translate))
        layer.mode = "paint"
        layer.selected_label = 2
        layer.brush_size = 8
        row.labels.set_layer(layer)
        row.check()
        return layer

    def _layers_changed(self) -> None:
        for row in self.pairs:
            row.refresh()

    # ------------------------------------------------------------------ state
    def _mode_changed(self, mode: str) -> None:
        self.convention_label.setText(CONVENTIONS.get(mode, ""))
        if hasattr(self, "epochs_spin"):  # the default length depends on the mode
            self._show_epochs()

    def _length_changed(self, choice: str) -> None:
        self.epochs_spin.setVisible(choice == "epochs")
        self.budget_spin.setVisible(choice != "epochs")
        self._show_epochs()

    def _continuing(self) -> bool:
        return self.resume_check.isChecked() and session.model is not None

    def _epochs_kind(self) -> str:
        return "continue" if self._continuing() else "fresh"

    def epochs_value(self, kind: str) -> int:
        """Epochs of a fresh run or of a continuation: the user's number, else the engine default."""
        chosen = self._epochs[kind]
        if chosen is not None:
            return chosen
        defaults = FinetuneConfig(mask_mode=self.mode_combo.currentText())
        return defaults.continue_epochs if kind == "continue" else defaults.total_epochs()

    def _epochs_edited(self, value: int) -> None:
        if not self._showing_epochs:
            self._epochs[self._epochs_kind()] = value

    def _show_epochs(self, *_: Any) -> None:
        """Show the epochs of the run Start would make (fresh or continuation) and say which."""
        self._showing_epochs = True
        try:
            self.epochs_spin.setValue(self.epochs_value(self._epochs_kind()))
        finally:
            self._showing_epochs = False
        if not self._continuing():
            text = ""
        elif self.length_combo.currentText() == "epochs":
            text = ("continuing: a short warm start from the current model (half the learning "
                    "rate, cosine decay), focused on painted pixels it gets wrong")
        else:
            text = "continuing from the current model for the whole time budget"
        self.length_label.setText(text)
        self.length_label.setVisible(bool(text))

    def _session_changed(self, what: str) -> None:
        if what == "encoder":
            if session.encoder is not None and self.encoder_combo.currentText() == "none":
                self.encoder_combo.setCurrentText("last pre-trained")
            self._sync_encoder()
        else:
            self._sync_session_model()

    def _sync_encoder(self, *_: Any) -> None:
        choice = self.encoder_combo.currentText()
        self.encoder_file.setVisible(choice == "from file")
        variant = None
        if choice == "last pre-trained":
            self.encoder_label.setText(session.describe_encoder())
            variant = session.encoder.variant if session.encoder is not None else None
        elif choice == "from file":
            path = self.encoder_file.path()
            text, variant = "choose an encoder file", None
            if path is not None and path.is_file():
                try:
                    meta = btunet.read_metadata(path)
                    variant = meta["model"]["name"]
                    text = f"{variant} encoder from {path.name}"
                except BTUnetError as exc:
                    text = sentence(exc)
            self.encoder_label.setText(text)
        else:
            self.encoder_label.setText("training starts from random weights")
        if variant in btunet.MODELS:
            self.variant_combo.setCurrentText(variant)

    def _sync_session_model(self) -> None:
        self.resume_check.setEnabled(session.model is not None)
        if session.model is None:
            self.resume_check.setChecked(False)
        self.model_label.setText("current model: " + session.describe_model())
        self._show_epochs()

    def config(self) -> FinetuneConfig:
        """The widget state as one engine config: the run Start makes.

        Continuing from the current model (in epochs) is ``FinetuneConfig.continuation()``, a
        short warm start; with a time budget, a continuation trains for the whole budget.
        """
        budget = self.length_combo.currentText() == "time budget"
        config = FinetuneConfig(
            model=self.variant_combo.currentText(), mask_mode=self.mode_combo.currentText(),
            epochs=100000 if budget else self._epochs["fresh"],
            continue_epochs=self.epochs_value("continue"),
            steps_per_epoch=self.steps_spin.value(), batch_size=self.batch_spin.value(),
            patch_size=self.patch_spin.value(), lr=self.lr_spin.value(),
            time_budget_s=60.0 * self.budget_spin.value() if budget else None,
            device=self.device_combo.currentText())
        return config.continuation() if self._continuing() and not budget else config

    def _request(self) -> Request:
        """Check the widget state and capture the data (raises BTUnetError with a clear message)."""
        if not self.pairs:
            raise BTUnetError("add at least one (image, labels) pair")
        for row in self.pairs:
            problem = row.problem()
            if problem:
                raise BTUnetError(problem)
        config = self.config()
        images = [layer_array(row.image.layer()) for row in self.pairs]
        # the labels are copied: the user may keep painting while training runs
        labels = [np.array(layer_array(row.labels.layer())) for row in self.pairs]
        resume = session.model if (self.resume_check.isChecked() and session.model is not None) else None
        encoder = None
        if resume is None:
            choice = self.encoder_combo.currentText()
            if choice == "last pre-trained":
                if session.encoder is None:
                    raise BTUnetError("no encoder was pre-trained in this session; pre-train one, "
                                      "choose 'from file', or choose 'none'")
                encoder = session.encoder
            elif choice == "from file":
                encoder = self.encoder_file.path()
                if encoder is None:
                    raise BTUnetError("choose the encoder file, or set encoder to 'none'")
        path = self.output_file.path()
        if path is not None and not _common.may_write(self, path):
            raise _common.Declined(f"{path} was kept; choose another model file")
        return Request(images, labels, config, encoder, resume, path)

    # ------------------------------------------------------------------ run
    def start(self) -> Optional[Job]:
        if self.job is not None and self.job.running:
            return None
        try:
            request = self._request()
        except BTUnetError as exc:
            _common.show_error(f"Fine-tuning cannot start: {sentence(exc)}")
            return None
        except _common.Declined as exc:
            _common.show_warning(f"Fine-tuning not started: {sentence(exc)}")
            return None
        request.preview = self._make_preview()
        self.previewed: list[tuple] = []  # plane indices previewed in this run
        self.uncertainty_shown: list[tuple] = []  # ... and given an uncertainty map
        self.plot.clear()
        self.progress.set_fraction(0, "starting…")
        self._budget = request.config.time_budget_s
        self._set_running(True)
        return self.run_job(Job(lambda job: self._train(job, request), self._done,
                                on_progress=self._on_progress, on_item=self._on_item))

    def _make_preview(self) -> Optional[LivePreview]:
        interval = self.preview_spin.value()
        if interval <= 0:
            return None
        # the pair whose layer is selected, else the first pair
        active = self.viewer.layers.selection.active
        row = next((r for r in self.pairs if active in (r.image.layer(), r.labels.layer())), self.pairs[0])
        image = row.image.layer()
        keep_active = active
        from napari.utils.colormaps import DirectLabelColormap
        colormap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (1.0, 0.85, 0.1, 1)})
        self.preview_layer = upsert_output(
            self.viewer, image, PREVIEW_KIND, np.zeros(spatial_shape(image), np.uint8), "labels",
            opacity=0.45, colormap=colormap)
        uncertainty = self.uncertainty_check.isChecked()
        self.uncertainty_layer = None
        if uncertainty:
            self.uncertainty_layer = upsert_output(
                self.viewer, image, UNCERTAINTY_KIND, np.zeros(spatial_shape(image), np.float32),
                "image", **UNCERTAINTY_STYLE)
        if keep_active is not None and keep_active in self.viewer.layers:
            self.viewer.layers.selection.active = keep_active  # keep the user's brush where it was
        self.tracker = PlaneTracker(self.viewer, image)
        return LivePreview(layer_array(image), bool(image.rgb), self.tracker, interval, uncertainty)

    @staticmethod
    def _train(job: Job, request: Request):
        """Runs in the worker thread."""
        model = copy.deepcopy(request.resume) if request.resume is not None else None
        preview = request.preview
        if preview is not None:
            preview.prepare()

        def on_progress(p) -> None:
            job.progress(snapshot(p))
            if preview is not None:
                preview.maybe(p.model, job)

        net = btunet.finetune(request.images, request.labels, request.config, encoder=request.encoder,
                              on_progress=on_progress, should_stop=job.should_stop, model=model)
        if preview is not None:
            preview.run(net, job)  # the returned (best) weights
        saved = btunet.save_model(net, request.path) if request.path is not None else None
        return net, saved

    def _on_progress(self, p) -> None:
        self.last_progress = p
        self.progress.show_training(p, self._budget)
        self.plot.add_loss(p.step, p.loss)
        if p.epoch_end and p.val_dice is not None:
            self.plot.add_right(p.step, p.val_dice)

    def _on_item(self, item) -> None:
        kind, index, mask, doubt = item
        if kind != PREVIEW_KIND:
            return
        if self._show_plane(self.preview_layer, index, mask):
            self.previewed.append(index)
        if doubt is not None and self._show_plane(self.uncertainty_layer, index, doubt):
            self.uncertainty_shown.append(index)

    def _show_plane(self, layer, index: tuple, plane: np.ndarray) -> bool:
        """Copy one previewed plane into the plugin's layer, if that layer is still there."""
        if layer is None or layer not in self.viewer.layers or layer.data.shape[len(index):] != plane.shape:
            return False
        layer.data[index] = plane
        layer.refresh()
        return True

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.save_button.setEnabled(not running)

    def _done(self, outcome: Outcome) -> None:
        self.last_outcome = outcome
        self._set_running(False)
        self.plot.flush()
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
        if outcome.error is not None:
            self.progress.set_text(f"failed: {sentence(outcome.error)}")
            for layer in (self.preview_layer, self.uncertainty_layer):
                if layer is not None and layer in self.viewer.layers and not layer.data.any():
                    self.viewer.layers.remove(layer)  # nothing was previewed
            _common.report_failure("Fine-tuning", outcome.error)
            return
        net, saved = outcome.result
        session.set_model(net, saved)
        self.resume_check.setChecked(True)
        meta = net.metadata
        text = (f"{'cancelled' if outcome.cancelled else 'done'}: {meta['epochs']} epochs in "
                f"{meta['seconds']} s, best epoch {meta['best_epoch']}")
        if saved is not None:
            text += f"; saved to {saved}"
        self.progress.set_fraction(1.0 if not outcome.cancelled else self.progress.bar.value() / 1000, text)

    # ------------------------------------------------------------------ save
    def _save_clicked(self) -> None:
        from qtpy.QtWidgets import QFileDialog
        if session.model is None:
            _common.show_warning("There is no model to save yet: fine-tune one first.")
            return
        start = str(self.output_file.path() or Path.home() / "model.safetensors")
        chosen, _ = QFileDialog.getSaveFileName(self, "Save model", start, "Checkpoints (*.safetensors)",
                                                options=QFileDialog.Option.DontConfirmOverwrite)
        if chosen:
            self.save_model(chosen if Path(chosen).suffix else chosen + ".safetensors")

    def save_model(self, path: "str | Path") -> Optional[Path]:
        """Save the session model (asks before replacing a file; the write is atomic)."""
        if session.model is None:
            _common.show_warning("There is no model to save yet: fine-tune one first.")
            return None
        path = Path(path)
        if not _common.may_write(self, path):
            return None
        try:
            saved = btunet.save_model(session.model, path)
        except (OSError, BTUnetError) as exc:
            _common.show_error(f"Could not save the model: {sentence(exc)}")
            return None
        session.set_model(session.model, saved)
        _common.show_info(f"Model saved to {saved}")
        return saved


def _spin(lo: int, hi: int, value: int, step: int = 1) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(lo, hi)
    spin.setSingleStep(step)
    spin.setValue(value)
    return spin
