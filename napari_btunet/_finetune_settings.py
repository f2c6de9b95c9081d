"""The settings half of the fine-tune widget: annotation mode, model, training length and
advanced options, kept in step with the session, turned into one ``FinetuneConfig``.

A mixin of ``FinetuneWidget``: it builds its rows into the widget (the widget's tests and
callers reach them as ``widget.mode_combo``, ``widget.epochs_spin``, ...) and remembers the
epochs of a fresh run and of a continuation apart.
"""
from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout

import btunet
from btunet import FinetuneConfig
from btunet.base.settings_schema import limits

from ._controls import PathField, UnitSpinBox, add_device_row, collapsible, describe_checkpoint, hint, setting_spin
from ._session import session

ENCODER_CHOICES = ("last pre-trained", "built-in encoder", "from file", "none")
LENGTH_CHOICES = ("epochs", "time budget")
#: what the label values mean in each annotation mode, in a painter's words
ANNOTATION_HINTS = {
    "sparse": ("sparse: 1 = background, 2 = object, 0 = not painted (ignored); for several classes, "
               "2 = first class, 3 = second class, 4 = third, …"),
    "dense": "dense: 0 = background, any other label = object (every pixel counts)",
    "classes": "classes: 0 = background, 1 = first class, 2 = second class, … (every pixel counts)",
}


def builtin_encoder_text() -> tuple[str, str | None]:
    """What the built-in encoder was trained on, and its variant (None if it is missing)."""
    from btunet import BTUnetError
    from btunet.train.builtin_encoder import builtin_metadata, describe_builtin
    try:
        meta = builtin_metadata()
    except BTUnetError as exc:
        return str(exc), None
    return describe_builtin(meta), meta["model"]["name"]


class FinetuneSettings:
    """Settings rows and state of ``FinetuneWidget`` (call ``_init_settings`` before building)."""

    def _init_settings(self) -> None:
        #: epochs the user typed, for a fresh run and for a continuation; None = the engine default
        self._epochs: dict[str, int | None] = {"fresh": None, "continue": None}
        self._showing_epochs = False

    # ------------------------------------------------------------------ layout
    def _build_mode_rows(self, layout) -> None:
        """The annotation mode and what it means, into ``layout`` (the training-data box)."""
        form = QFormLayout()
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(limits(FinetuneConfig, "mask_mode").choices)
        self.mode_combo.currentTextChanged.connect(self._mode_changed)
        form.addRow("annotation", self.mode_combo)
        layout.addLayout(form)
        self.convention_label = hint("")
        layout.addWidget(self.convention_label)
        self._mode_changed(self.mode_combo.currentText())

    def _build_model_box(self, layout) -> None:
        model_box = QGroupBox("Model")
        form = QFormLayout(model_box)
        self.encoder_combo = QComboBox()
        self.encoder_combo.addItems(ENCODER_CHOICES)
        self.encoder_combo.setCurrentText("none")
        self.encoder_combo.currentTextChanged.connect(self._sync_encoder)
        form.addRow("encoder", self.encoder_combo)
        self.encoder_file = PathField("open", placeholder="pre-trained encoder (.safetensors)")
        self.encoder_file.changed.connect(self._sync_encoder)
        form.addRow(self.encoder_file)
        self.encoder_label = hint("")
        form.addRow(self.encoder_label)
        self.variant_combo = QComboBox()
        self.variant_combo.addItems(list(btunet.MODELS))
        form.addRow("variant", self.variant_combo)
        self.resume_check = QCheckBox("continue from the current model")
        self.resume_check.setToolTip("paint more (corrections where the preview is wrong), then "
                                     "Start: a short warm start from the current weights (its "
                                     "variant) at half the learning rate, focused on painted "
                                     "pixels the model gets wrong")
        self.resume_check.toggled.connect(self._show_epochs)
        form.addRow(self.resume_check)
        self.model_label = hint("")
        form.addRow(self.model_label)
        layout.addWidget(model_box)

    def _build_training_box(self, layout) -> None:
        train = QGroupBox("Training")
        form = QFormLayout(train)
        length = QHBoxLayout()
        self.length_combo = QComboBox()
        self.length_combo.addItems(LENGTH_CHOICES)
        # a fresh run's epochs and a continuation's, both at least 1 here (continue_epochs' range)
        self.epochs_spin = setting_spin(FinetuneConfig, "continue_epochs")
        self.epochs_spin.valueChanged.connect(self._epochs_edited)
        self.budget_spin = setting_spin(FinetuneConfig, "time_budget_s", 5.0, ceiling=10000, decimals=1,
                                        spin=UnitSpinBox())  # in minutes
        self.budget_spin.setSuffix(" min")
        self.length_combo.currentTextChanged.connect(self._length_changed)
        length.addWidget(self.length_combo)
        length.addWidget(self.epochs_spin)
        length.addWidget(self.budget_spin)
        form.addRow("train for", length)
        self.length_label = hint("")
        form.addRow(self.length_label)
        self.output_file = PathField("save", placeholder="optional: save the model here")
        form.addRow("model file", self.output_file)
        self.device_combo, self.device_label = add_device_row(form)
        self.advanced, adv = collapsible("Advanced")
        self.steps_spin = setting_spin(FinetuneConfig, "steps_per_epoch")
        adv.addRow("steps per epoch", self.steps_spin)
        self.batch_spin = setting_spin(FinetuneConfig, "batch_size", ceiling=256)
        adv.addRow("batch size", self.batch_spin)
        self.patch_spin = setting_spin(FinetuneConfig, "patch_size", step=16)
        adv.addRow("patch size", self.patch_spin)
        self.lr_spin = setting_spin(FinetuneConfig, "lr", step=1e-4, decimals=5)
        adv.addRow("learning rate", self.lr_spin)
        self.borders_check = QCheckBox("learn borders between touching objects")
        self.borders_check.setToolTip(
            "also learn where objects meet, so Predict's instances separate touching objects: from "
            "instance masks (dense, one id per object) or from background strokes painted between "
            "the strokes of two objects (sparse)")
        adv.addRow(self.borders_check)
        self.teacher_check = QCheckBox("teacher sees the encoder's features")
        self.teacher_check.setToolTip(
            "strokes: the random forest that labels the unpainted pixels also looks at the maps of the "
            "pre-trained encoder (the chosen one, else the built-in one), beside its filters")
        self.teacher_check.setChecked(FinetuneConfig.teacher_features == "encoder")
        adv.addRow(self.teacher_check)
        self.forest_edges_check = QCheckBox("corrections: the forest votes at the model's edges")
        self.forest_edges_check.setToolTip(
            "strokes, when continuing: the random forest on all strokes also votes near the model's own "
            "edges (otherwise the model alone teaches there from the second continuation on). Tick it "
            "when corrections stop improving the preview, or objects stay a pixel too fat after you "
            "painted background along their rims; it can shrink objects the model already drew right")
        self.forest_edges_check.setChecked(FinetuneConfig.continue_teacher == "mean")
        adv.addRow(self.forest_edges_check)
        self.background_check = QCheckBox("normalise by the background level")
        self.background_check.setToolTip(
            "map each image's background peak to 0 and its 99.8th percentile to 1 instead of its 1st and "
            "99.8th percentiles, so images where cells cover more or less of the field keep the same values "
            "(a model trained this way cannot be exported as a bioimage.io package)")
        self.background_check.setChecked(FinetuneConfig.normalization == "background")
        adv.addRow(self.background_check)
        self.preview_spin = QDoubleSpinBox()
        self.preview_spin.setRange(0, 600)
        self.preview_spin.setDecimals(1)
        self.preview_spin.setValue(3.0)
        self.preview_spin.setSuffix(" s")
        self.preview_spin.setToolTip("predict the plane on screen this often while training (0 = off)")
        adv.addRow("preview every", self.preview_spin)
        self.uncertainty_check = QCheckBox("show uncertainty (where to paint next)")
        self.uncertainty_check.setChecked(False)
        self.uncertainty_check.setToolTip(
            "the live preview also shows where the model is likely wrong, in magenta, in "
            "'<image> uncertainty [btunet]' (on strokes: where the random forest on the same strokes, "
            "the model's teacher, is unsure; clear where it is sure); paint corrections where it is "
            "magenta and the preview is wrong, then Start again to continue")
        form.addRow(self.uncertainty_check)
        # the map is computed by the live preview: nothing to show while the preview is off
        self.preview_spin.valueChanged.connect(lambda value: self.uncertainty_check.setEnabled(value > 0))
        form.addRow(self.advanced)
        layout.addWidget(train)
        self._length_changed(self.length_combo.currentText())
        self._show_epochs()

    # ------------------------------------------------------------------ state
    def _mode_changed(self, mode: str) -> None:
        self.convention_label.setText(ANNOTATION_HINTS.get(mode, ""))
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

    def _read_session(self) -> None:
        """When the dock opens: take what the session already holds, as if it had just been made
        (its encoder instead of 'none', a continuation of its model)."""
        if session.encoder is not None and self.encoder_combo.currentText() == "none":
            self.encoder_combo.setCurrentText("last pre-trained")
        self._sync_encoder()
        self._sync_session_model()
        if session.model is not None:
            self.resume_check.setChecked(True)

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
        elif choice == "built-in encoder":
            text, variant = builtin_encoder_text()
            self.encoder_label.setText(text)
        elif choice == "from file":
            text, meta = describe_checkpoint(self.encoder_file.path(), "encoder")
            if meta is not None and meta.get("kind") == "encoder":
                variant = meta["model"]["name"]
            self.encoder_label.setText(text)
        else:
            self.encoder_label.setText("training starts from random weights")
        if variant in btunet.MODELS:
            self.variant_combo.setCurrentText(variant)
        # an encoder fixes the variant: its weights only fit that architecture
        self.variant_combo.setEnabled(variant not in btunet.MODELS)
        self.variant_combo.setToolTip(f"follows the encoder ({variant})" if variant in btunet.MODELS
                                      else "the U-Net variant to train")

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
            instances="auto" if self.borders_check.isChecked() else "none",
            teacher_features="encoder" if self.teacher_check.isChecked() else "filters",
            continue_teacher="mean" if self.forest_edges_check.isChecked() else "both",
            normalization="background" if self.background_check.isChecked() else "percentile",
            device=self.device_combo.currentText())
        return config.continuation() if self._continuing() and not budget else config

