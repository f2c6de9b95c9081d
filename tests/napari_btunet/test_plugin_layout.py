"""The docks as a user meets them on a 1366 x 768 screen: opened from the Plugins menu in any
order, each shows its main button and progress line without scrolling, and never scrolls sideways."""
import numpy as np
import pytest
from qtpy.QtCore import QRect
from qtpy.QtWidgets import QApplication, QLabel, QWidget

from napari_btunet._controls import PathField

from .plugin_helpers import open_from_menu

pytestmark = pytest.mark.viewer

SCREEN = (1366, 768)
MAIN_BUTTON = {"Fine-tune": "start_button", "Predict": "run_button", "Pre-train": "start_button"}


def settle(qtbot, ms=300):
    QApplication.processEvents()
    qtbot.wait(ms)


@pytest.fixture
def small_screen_viewer(make_napari_viewer, messages):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-btunet", "bbbc007")
    viewer.window._qt_window.resize(*SCREEN)
    return viewer


def shown_in_dock(widget, child: QWidget) -> bool:
    """``child`` is visible and lies wholly inside the dock's visible area (no scrolling needed)."""
    dock = widget.dock()
    if not (child.isVisible() and dock.isVisible()):
        return False
    top_left = child.mapTo(dock, child.rect().topLeft())
    return dock.rect().contains(QRect(top_left, child.size()))


def check_usable(widget, name):
    area = widget._scroll_area
    assert widget.dock().height() >= 300, f"{name} dock squeezed to {widget.dock().height()} px"
    for child in (getattr(widget, MAIN_BUTTON[name]), widget.cancel_button, widget.progress.bar,
                  widget.progress.label):
        assert shown_in_dock(widget, child), f"{name}: {child} is not visible without scrolling"
    assert not area.horizontalScrollBar().isVisible()
    # nothing is cut at the right: the body's content fits the viewport's width
    assert area.widget().minimumSizeHint().width() <= area.viewport().width(), name
    assert area.widget().width() <= area.viewport().width()


@pytest.mark.parametrize("order", [("Fine-tune", "Predict"), ("Predict", "Fine-tune"),
                                   ("Pre-train", "Fine-tune", "Predict")])
def test_docks_from_the_menu_are_usable(small_screen_viewer, qtbot, order):
    viewer = small_screen_viewer
    widgets = {}
    for name in order:
        widgets[name] = open_from_menu(viewer, name)
        settle(qtbot)
        check_usable(widgets[name], name)  # the dock just opened is in front and usable
    # the plugin's docks share one column as tabs; each is usable when its tab is chosen
    for name, widget in widgets.items():
        widget.dock().raise_()
        settle(qtbot)
        check_usable(widget, name)
        assert widget.progress.label.text() == "idle"


def test_dock_beside_another_plugin_dock_gets_room(small_screen_viewer, qtbot):
    viewer = small_screen_viewer
    other = QLabel("another plugin")
    viewer.window.add_dock_widget(other, name="other plugin", area="right")
    settle(qtbot)
    widget = open_from_menu(viewer, "Fine-tune")
    settle(qtbot)
    check_usable(widget, "Fine-tune")
    assert other.isVisible()  # beside it, not hidden behind it


def test_predicted_objects_never_look_painted(sample_viewer, qtbot):
    """A predicted object's colour differs from painted background (1) and object (2)."""
    from napari_btunet._layers import prediction_colormap
    painted = sample_viewer.layers["BBBC007 annotation"]
    painted_colours = [np.asarray(painted.get_color(v))[:3] for v in (1, 2)]
    for instances in (False, True):
        layer = sample_viewer.add_labels(np.arange(40, dtype=np.int32).reshape(5, 8),
                                         colormap=prediction_colormap(instances))
        values = range(1, 40) if instances else [1]
        for value in values:
            colour = np.asarray(layer.get_color(value))[:3]
            assert min(np.linalg.norm(colour - c) for c in painted_colours) > 0.3, (instances, value)


def test_path_field_reports_a_chosen_file(qtbot, monkeypatch, tmp_path):
    from qtpy.QtWidgets import QFileDialog
    field = PathField("open")
    qtbot.addWidget(field)
    seen = []
    field.changed.connect(lambda: seen.append(field.path()))
    chosen = tmp_path / "Model.safetensors"
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(chosen), "")))
    field.button.click()
    assert seen == [chosen]


def test_three_tabs_keep_their_titles_whole(small_screen_viewer, qtbot):
    from qtpy.QtWidgets import QTabBar
    viewer = small_screen_viewer
    widgets = [open_from_menu(viewer, name) for name in ("Pre-train", "Fine-tune", "Predict")]
    settle(qtbot)
    bars = [bar for bar in viewer.window._qt_window.findChildren(QTabBar) if bar.isVisible() and bar.count() == 3]
    assert len(bars) == 1
    bar = bars[0]
    titles = [bar.tabText(i) for i in range(bar.count())]
    assert titles == ["Pre-train", "Fine-tune", "Predict"] == [w.tab_title for w in widgets]
    for i, title in enumerate(titles):  # each title fits its tab, nothing elided
        assert bar.fontMetrics().horizontalAdvance(title) <= bar.tabRect(i).width(), title
    # the dock's own title bar keeps napari's full name
    assert widgets[1].dock().name == "Fine-tune (BT-Unet)"


def test_long_layer_names_stay_apart_in_the_pair_boxes(small_screen_viewer, qtbot):
    """Two annotation layers with a long common start: each box shows a different text (cut in
    the middle, not at the end), and its tooltip has the whole name."""
    from qtpy.QtCore import Qt
    viewer = small_screen_viewer
    finetune = open_from_menu(viewer, "Fine-tune")
    image, painted = viewer.layers["BBBC007 nuclei"], viewer.layers["BBBC007 annotation"].data
    names = ["BBBC007 nuclei annotation (second round) by Anna", "BBBC007 nuclei annotation (second round) by Ben"]
    layers = [viewer.add_labels(painted.copy(), name=name) for name in names]
    finetune.set_pairs([(image, layer) for layer in layers])
    settle(qtbot)
    boxes = [row.labels for row in finetune.pairs]
    shown = [box.shown_text() for box in boxes]
    assert shown[0] != shown[1] and all("…" in text for text in shown), shown
    assert shown[0].endswith("Anna") and shown[1].endswith("Ben")
    # cut at the end, as Qt does by default, both would read the same
    width = boxes[0]._text_rect()[1].width()
    metrics = boxes[0].fontMetrics()
    assert len({metrics.elidedText(name, Qt.TextElideMode.ElideRight, width) for name in names}) == 1
    for box, name in zip(boxes, names, strict=True):
        assert box.currentText() == name and box.toolTip().splitlines()[0] == name
        assert metrics.horizontalAdvance(box.shown_text()) <= width
        assert not box.grab().isNull()  # painted with the shortened text


def test_the_budget_unit_is_shown_whole_in_the_narrowest_dock(small_screen_viewer, qtbot):
    from qtpy.QtCore import Qt
    viewer = small_screen_viewer
    finetune = open_from_menu(viewer, "Fine-tune")
    finetune.length_combo.setCurrentText("time budget")
    spin = finetune.budget_spin
    viewer.window._qt_window.resizeDocks([finetune.dock()], [10], Qt.Orientation.Horizontal)
    settle(qtbot)
    for value in (0.2, 10000.0):
        spin.setValue(value)
        settle(qtbot, 50)
        assert spin.text().endswith(" min")
        assert spin.lineEdit().fontMetrics().horizontalAdvance(spin.text()) <= spin.lineEdit().width(), value
