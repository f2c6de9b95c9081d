"""Pre-train widget: a folder or image layers -> one PretrainConfig -> ``btunet.pretrain`` in a
worker, with a live loss plot; the encoder goes to the session (and to a file if one is given)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from napari.layers import Image
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox

import btunet
from btunet import BTUnetError, PretrainConfig
from btunet.base.settings_schema import limits

from . import _messages
from ._controls import PathField, add_device_row, collapsible, hint, setting_spin
from ._job_widget import JobWidget
from ._jobs import Job, Outcome, snapshot
from ._layers import layer_array, watch_layers
from ._messages import Declined
from ._pickers import LayerChecklist
from ._plot import LivePlot
from ._session import session

SOURCE_CHOICES = ("image layers", "folder")
CHANNEL_WORDS = {1: "grey", 3: "RGB"}
#: "auto", then the channel counts PretrainConfig.channels accepts, e.g. "1 (grey)"
CHANNEL_CHOICES = ("auto", *(f"{n} ({CHANNEL_WORDS[n]})" for n in limits(PretrainConfig, "channels").choices))


@dataclass
class PretrainRequest:
    sources: list         # arrays, or [folder]
    config: PretrainConfig
    channels: str         # one of CHANNEL_CHOICES
    any_rgb: bool
    path: Path | None


class PretrainWidget(JobWidget):
    """Barlow Twins pre-training of a U-Net encoder on unlabelled images."""

    activity = "Pre-training"
    tab_title = "Pre-train"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.last_outcome: Outcome | None = None
        self.last_progress = None  # the latest engine Progress (without the model)
        self._build()
        self.follow_session(session, "_session_changed")
        self.on_close(watch_layers(self.viewer, self.layers_list.refresh))

    def _session_changed(self, what: str) -> None:
        if what == "encoder":
            self.encoder_label.setText(session.describe_encoder())

    def _build(self) -> None:
        self.start_button = self.add_start_cancel("Start")
        layout = self.body
        data = QGroupBox("Unlabelled images")
        form = QFormLayout(data)
        self.source_combo = QComboBox()
        self.source_combo.addItems(SOURCE_CHOICES)
        self.source_combo.currentTextChanged.connect(self._source_changed)
        form.addRow("source", self.source_combo)
        self.folder = PathField("folder", placeholder="folder of .tif/.png/.jpg images")
        form.addRow(self.folder)
        self.layers_list = LayerChecklist(self.viewer, Image)
        form.addRow(self.layers_list)
        layout.addWidget(data)

        settings = QGroupBox("Pre-training")
        form = QFormLayout(settings)
        defaults = PretrainConfig()
        self.variant_combo = QComboBox()
        self.variant_combo.addItems(list(btunet.MODELS))
        self.variant_combo.setCurrentText(defaults.model)
        form.addRow("variant", self.variant_combo)
        self.channels_combo = QComboBox()
        self.channels_combo.addItems(CHANNEL_CHOICES)
        self.channels_combo.setToolTip("auto: 3 if any source is RGB, else 1")
        form.addRow("channels", self.channels_combo)
        self.epochs_spin = setting_spin(PretrainConfig, "epochs")
        form.addRow("epochs", self.epochs_spin)
        self.device_combo, self.device_label = add_device_row(form)
        self.output_file = PathField("save", placeholder="optional: save the encoder here")
        form.addRow("encoder file", self.output_file)
        self.advanced, adv = collapsible("Advanced")
        self.samples_spin = setting_spin(PretrainConfig, "samples_per_epoch", ceiling=1_000_000)
        self.samples_spin.setToolTip("random patches per epoch (at least one per plane)")
        adv.addRow("patches per epoch", self.samples_spin)
        self.batch_spin = setting_spin(PretrainConfig, "batch_size", ceiling=1024)
        adv.addRow("batch size", self.batch_spin)
        self.patch_spin = setting_spin(PretrainConfig, "patch_size", step=16)
        adv.addRow("patch size", self.patch_spin)
        form.addRow(self.advanced)
        layout.addWidget(settings)

        self.plot = LivePlot()
        layout.addWidget(self.plot)
        self.encoder_label = hint(session.describe_encoder())
        layout.addWidget(self.encoder_label)
        layout.addStretch(1)
        self._source_changed(self.source_combo.currentText())

    def _source_changed(self, choice: str) -> None:
        self.folder.setVisible(choice == "folder")
        self.layers_list.setVisible(choice == "image layers")

    def config(self) -> PretrainConfig:
        """The widget state as one engine config (``channels`` is resolved when the run starts)."""
        return PretrainConfig(model=self.variant_combo.currentText(), epochs=self.epochs_spin.value(),
                              samples_per_epoch=self.samples_spin.value(),
                              batch_size=self.batch_spin.value(), patch_size=self.patch_spin.value(),
                              device=self.device_combo.currentText())

    def _request(self) -> PretrainRequest:
        if self.source_combo.currentText() == "folder":
            folder = self.folder.path()
            if folder is None or not folder.is_dir():
                raise BTUnetError("choose an existing folder of images")
            sources, any_rgb = [str(folder)], False
        else:
            layers = self.layers_list.layers()
            if not layers:
                raise BTUnetError("tick at least one image layer (or choose a folder)")
            sources = [layer_array(layer) for layer in layers]
            any_rgb = any(layer.rgb for layer in layers)
        path = self.output_file.path()
        if path is not None and not _messages.may_write(self, path):
            raise Declined(f"{path} was kept; choose another encoder file")
        return PretrainRequest(sources, self.config(), self.channels_combo.currentText(), any_rgb, path)

    def start(self) -> Job | None:
        request = self.take_request()
        if request is None:
            return None
        self.plot.clear()
        self.progress.set_fraction(0, "reading images…")
        self._set_running(True)
        return self.run_job(Job(lambda job: self._train(job, request), self._done,
                                on_progress=self._on_progress))

    @staticmethod
    def _train(job: Job, request: PretrainRequest):
        """Runs in the worker thread."""
        config = request.config
        if request.channels == "auto":
            rgb = request.any_rgb
            if isinstance(request.sources[0], str):  # a folder: look at its first image
                from btunet.io.imageio import is_rgb, list_images, read_image
                files = list_images(request.sources)
                rgb = bool(files) and is_rgb(read_image(files[0]))
            config.channels = 3 if rgb else 1
        else:
            config.channels = int(request.channels.split()[0])
        encoder = btunet.pretrain(request.sources, config,
                                  on_progress=lambda p: job.progress(snapshot(p)),
                                  should_stop=job.should_stop)
        saved = encoder.save(request.path) if request.path is not None else None
        return encoder, saved

    def _on_progress(self, p) -> None:
        self.last_progress = p
        self.progress.show_training(p)
        self.plot.add_loss(p.step, p.loss)

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _done(self, outcome: Outcome) -> None:
        self.last_outcome = outcome
        self._set_running(False)
        self.plot.flush()
        if outcome.error is not None:
            self.failed(outcome.error)
            return
        encoder, saved = outcome.result
        session.set_encoder(encoder, saved)
        self.encoder_label.setText(session.describe_encoder())
        text = (f"{'cancelled' if outcome.cancelled else 'done'}: {encoder.metadata['epochs']} epochs "
                f"in {encoder.metadata['seconds']} s" + (f"; saved to {saved}" if saved else ""))
        self.progress.set_fraction(1.0 if not outcome.cancelled else self.progress.bar.value() / 1000, text)

