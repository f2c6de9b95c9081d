"""Fine-tune widget: (image, labels) pairs -> one FinetuneConfig -> ``btunet.finetune`` in a worker,
with a live loss / validation-Dice plot and a live preview (and uncertainty map) of the plane on screen.

The settings rows are in ``_finetune_settings``, the pair rows in ``_finetune_pairs`` and the
live preview in ``_live_preview``."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout

import btunet
from btunet import BTUnetError, FinetuneConfig
from btunet.pipeline.separation import describe_separation
from btunet.pipeline.thresholds import describe_threshold
from btunet.train.builtin_encoder import BUILTIN

from . import _messages
from ._axes_row import AxesRow, engine_axes
from ._export_button import export_button
from ._finetune_pairs import NEW_ANNOTATION, PairRow, matching_labels, pair_titles
from ._finetune_settings import FinetuneSettings
from ._job_widget import JobWidget
from ._jobs import Job, Outcome, snapshot
from ._layers import layer_array, plane_geometry, spatial_shape, watch_layers
from ._live_preview import FOREST_PREVIEW_KIND, FOREST_SHOWN, PREVIEW_KIND, UNET_SHOWN, LivePreview, PreviewLayers
from ._messages import Declined, sentence
from ._plot import LivePlot
from ._session import session


@dataclass
class Request:
    """Everything a fine-tuning run needs, captured on the GUI thread at Start."""
    images: list
    labels: list
    config: FinetuneConfig
    encoder: Any = None
    resume: Any = None
    path: Path | None = None
    preview: LivePreview | None = None
    quick_preview: bool = False  # a fresh run on strokes shows their forest first


class FinetuneWidget(FinetuneSettings, JobWidget):
    """Train a U-Net variant on painted labels, preview it live, keep it in the session."""

    activity = "Fine-tuning"
    tab_title = "Fine-tune"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.pairs: list[PairRow] = []
        self.preview_layers: PreviewLayers | None = None  # those of the latest run with a preview
        self.last_outcome: Outcome | None = None
        self.last_progress = None  # the latest engine Progress (without the model)
        self.previewed: list[tuple] = []
        self.preview_kinds: list[str] = []  # what each preview was: the forest's or the U-Net's
        self.uncertainty_shown: list[tuple] = []
        self.preview_note = ""  # which model the preview shows, added to the status line
        self._init_settings()
        self._build()
        self.add_pair()
        self._read_session()
        self.follow_session(session, "_session_changed")
        self.on_close(watch_layers(self.viewer, self._layers_changed))

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.start_button = self.add_start_cancel("Start")
        self.save_button = QPushButton("Save model…")
        self.save_button.setToolTip("write the current model to a .safetensors file")
        self.save_button.clicked.connect(self._save_clicked)
        self.actions.addWidget(self.save_button)
        self.export_button = export_button(self, lambda: session.model, self.progress.set_text)
        self.actions.addWidget(self.export_button)
        layout = self.body

        data = QGroupBox("Training data")
        data_layout = QVBoxLayout(data)
        data_layout.setSpacing(3)
        data_layout.addLayout(pair_titles())
        self.pairs_box = QVBoxLayout()
        self.pairs_box.setSpacing(3)
        data_layout.addLayout(self.pairs_box)
        self.axes_row = AxesRow(self.viewer)  # of the first pair's image
        self.axes_row.changed.connect(self._layers_changed)
        data_layout.addWidget(self.axes_row)
        buttons = QHBoxLayout()
        self.add_pair_button = QPushButton("Add pair")
        self.add_pair_button.setToolTip("train on another (image, labels) pair too")
        self.add_pair_button.clicked.connect(lambda: self.add_pair())
        self.new_labels_button = QPushButton(NEW_ANNOTATION)
        self.new_labels_button.setToolTip("an empty labels layer for the first pair's image, "
                                          "ready to paint 2 = object, 1 = background")
        self.new_labels_button.clicked.connect(self.new_annotation_layer)
        buttons.addWidget(self.add_pair_button)
        buttons.addWidget(self.new_labels_button)
        data_layout.addLayout(buttons)
        self._build_mode_rows(data_layout)
        layout.addWidget(data)
        self._build_model_box(layout)
        self._build_training_box(layout)
        self.plot = LivePlot(right_label="val Dice")
        layout.addWidget(self.plot)
        layout.addStretch(1)

    # ------------------------------------------------------------------ pairs
    def add_pair(self, image=None, labels=None) -> PairRow:
        row = PairRow(self.viewer, self.remove_pair)
        row.image.currentTextChanged.connect(self._follow_first)
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
        self._follow_first()
        return row

    def remove_pair(self, row: PairRow) -> None:
        if row in self.pairs:
            self.pairs.remove(row)
            self.pairs_box.removeWidget(row)
            row.deleteLater()
            self._follow_first()

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
            _messages.show_warning("Open an image first, then add an annotation layer for it.")
            return None
        layer = self.viewer.add_labels(
            np.zeros(spatial_shape(image), np.uint8), name=f"{image.name} annotation", **plane_geometry(image))
        layer.mode = "paint"
        layer.selected_label = 2
        layer.brush_size = 8
        row.labels.set_layer(layer)
        row.check()
        return layer

    def _follow_first(self, *_: Any) -> None:
        """The Axes row describes the first pair's image."""
        if hasattr(self, "axes_row"):
            self.axes_row.follow(self.pairs[0].image.layer() if self.pairs else None)

    def _layers_changed(self) -> None:
        self._follow_first()
        for row in self.pairs:
            row.refresh()

    def _axes(self) -> str | None:
        """The one axes string of the training images (they must share it)."""
        if self.axes_row.layer is not None and not self.axes_row.apply():
            raise BTUnetError(f"the axes of {self.axes_row.layer.name!r}: {self.axes_row.note.text()}")
        found = {engine_axes(row.image.layer()) for row in self.pairs}
        if len(found) > 1:
            raise BTUnetError("the training images have different axes (" + ", ".join(sorted(map(str, found)))
                              + "); train on images of one kind")
        return found.pop() if found else None

    def _request(self) -> Request:
        """Check the widget state and capture the data (raises BTUnetError with a clear message)."""
        if not self.pairs:
            raise BTUnetError("add at least one (image, labels) pair")
        for row in self.pairs:
            problem = row.problem()
            if problem:
                raise BTUnetError(problem)
        if self.encoder_combo.currentText() == "from file":
            self._sync_encoder()  # the variant follows the file, even one typed without Enter
        config = dataclasses.replace(self.config(), axes=self._axes())
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
            elif choice == "built-in encoder":
                encoder = BUILTIN
            elif choice == "from file":
                encoder = self.encoder_file.path()
                if encoder is None:
                    raise BTUnetError("choose the encoder file, or set encoder to 'none'")
        path = self.output_file.path()
        if path is not None and not _messages.may_write(self, path):
            raise Declined(f"{path} was kept; choose another model file")
        return Request(images, labels, config, encoder, resume, path)

    # ------------------------------------------------------------------ run
    def start(self) -> Job | None:
        request = self.take_request()
        if request is None:
            return None
        row = self._preview_row()
        request.preview = self._make_preview(row, request.config.threshold)
        if request.preview is not None and request.config.mask_mode == "sparse":
            request.preview.use_strokes(request.labels[self.pairs.index(row)], request.config.normalization,
                                        request.config.seed)
            request.quick_preview = request.resume is None  # a continuation's model beats a forest
        self.previewed: list[tuple] = []  # plane indices previewed in this run
        self.preview_kinds: list[str] = []
        self.preview_note = ""
        self.uncertainty_shown: list[tuple] = []  # ... and given an uncertainty map
        self.plot.clear()
        self.last_progress = None
        self.progress.set_fraction(0, "starting…")
        self._set_running(True)
        return self.run_job(Job(lambda job: self._train(job, request), self._done,
                                on_progress=self._on_progress, on_item=self._on_item))

    def _preview_row(self) -> PairRow:
        """The pair whose layer is selected, else the first pair."""
        active = self.viewer.layers.selection.active
        return next((r for r in self.pairs if active in (r.image.layer(), r.labels.layer())), self.pairs[0])

    def _make_preview(self, row: PairRow, threshold: float) -> LivePreview | None:
        interval = self.preview_spin.value()
        if interval <= 0:
            return None
        self.preview_layers = PreviewLayers(self.viewer, row.image.layer(), self.uncertainty_check.isChecked())
        return self.preview_layers.live_preview(interval, threshold)

    @staticmethod
    def _train(job: Job, request: Request):
        """Runs in the worker thread."""
        model = copy.deepcopy(request.resume) if request.resume is not None else None
        preview = request.preview
        if preview is not None and request.quick_preview:  # an answer within a second
            preview.show_forest(job)
        if preview is not None:
            preview.prepare(request.config.time_budget_s)

        def on_progress(p) -> None:
            if preview is not None and p.time_budget_s is None and not preview.pace_includes_previews(p):
                p = dataclasses.replace(p, eta_s=None)  # shown as 'ETA …' until the pace is known
            job.progress(snapshot(p))
            if preview is not None:
                preview.maybe(p, job)

        net = btunet.finetune(request.images, request.labels, request.config, encoder=request.encoder,
                              on_progress=on_progress, should_stop=job.should_stop, model=model)
        if preview is not None:
            job.progress("showing the final model in the preview…")
            preview.threshold = None  # the model's own: dense masks may have tuned it on validation pixels
            preview.run(net, job)  # the returned (best) weights
        if request.path is not None:
            job.progress("saving the model…")
        saved = btunet.save_model(net, request.path) if request.path is not None else None
        return net, saved

    def _on_progress(self, p) -> None:
        if isinstance(p, str):  # the worker's last steps after training
            self.progress.set_text(p)
            return
        self.last_progress = p
        self.progress.show_training(p, self.preview_note)
        self.plot.add_loss(p.step, p.loss)
        if p.epoch_end and p.val_dice is not None:
            self.plot.add_right(p.step, p.val_dice)

    def _on_item(self, item) -> None:
        kind, index, mask, doubt = item
        if kind not in (PREVIEW_KIND, FOREST_PREVIEW_KIND) or self.preview_layers is None:
            return
        shown, doubt_shown = self.preview_layers.show(index, mask, doubt)
        if shown:
            self.previewed.append(index)
            self.preview_kinds.append(kind)
            if kind == FOREST_PREVIEW_KIND or self.preview_note == FOREST_SHOWN:  # the first, and the switch
                self.preview_note = FOREST_SHOWN if kind == FOREST_PREVIEW_KIND else UNET_SHOWN
                self.progress.set_text(self.preview_note)
        if doubt_shown:
            self.uncertainty_shown.append(index)

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.save_button.setEnabled(not running)

    def _done(self, outcome: Outcome) -> None:
        self.last_outcome = outcome
        self._set_running(False)
        self.plot.flush()
        if self.preview_layers is not None:
            self.preview_layers.stop_tracking()
        if outcome.error is not None:
            if self.preview_layers is not None:
                self.preview_layers.remove_empty()  # nothing was previewed
            self.failed(outcome.error)
            return
        net, saved = outcome.result
        session.set_model(net, saved)
        self.resume_check.setChecked(True)
        meta = net.metadata
        text = self._outcome_text(meta, outcome.cancelled)
        for line in (describe_threshold(meta), describe_separation(meta)):
            if line:
                text += f"; {line}"
        if saved is not None:
            text += f"; saved to {saved}"
        self.progress.set_fraction(1.0 if not outcome.cancelled else self.progress.bar.value() / 1000, text)

    def _outcome_text(self, meta: dict, cancelled: bool) -> str:
        """'done: 12 epochs in 40 s, best epoch 11', or, for a run stopped inside its first
        epoch, how it stopped and how many steps the model has."""
        if meta["epochs"] == 0:
            steps = self.last_progress.step if self.last_progress is not None else 0
            why = "cancelled" if cancelled else (
                "stopped by the time budget" if meta.get("stopped") == "time_budget" else "stopped")
            return (f"{why} before one epoch ended; the model has {steps} training "
                    f"step{'' if steps == 1 else 's'} ({meta['seconds']} s)")
        text = f"{'cancelled' if cancelled else 'done'}: {meta['epochs']} epochs in {meta['seconds']} s"
        return text + (f", best epoch {meta['best_epoch']}" if meta.get("best_epoch") else "")

    # ------------------------------------------------------------------ save
    def _save_clicked(self) -> None:
        from qtpy.QtWidgets import QFileDialog
        if session.model is None:
            _messages.show_warning("There is no model to save yet: fine-tune one first.")
            return
        start = str(self.output_file.path() or Path.home() / "model.safetensors")
        chosen, _ = QFileDialog.getSaveFileName(self, "Save model", start, "Checkpoints (*.safetensors)",
                                                options=QFileDialog.Option.DontConfirmOverwrite)
        if chosen:
            self.save_model(chosen if Path(chosen).suffix else chosen + ".safetensors")

    def save_model(self, path: str | Path) -> Path | None:
        """Save the session model (asks before replacing a file; the write is atomic)."""
        if session.model is None:
            _messages.show_warning("There is no model to save yet: fine-tune one first.")
            return None
        path = Path(path)
        if not _messages.may_write(self, path):
            return None
        try:
            saved = btunet.save_model(session.model, path)
        except (OSError, BTUnetError) as exc:
            self.progress.set_text(f"not saved: {sentence(exc)}")
            _messages.show_error(f"Could not save the model: {sentence(exc)}")
            return None
        session.set_model(session.model, saved)
        self.progress.set_text(f"model saved to {saved}")
        _messages.show_info(f"Model saved to {saved}")
        return saved
