"""A first answer within a second of Start: the stroke teacher's random forest, shown before the U-Net.

A fresh U-Net needs a few epochs (10-20 s on a CPU) before its preview means anything; a
pixel classifier on the same strokes (the ilastik approach) answers in well under a second.
``forest_preview`` fits exactly the forest that gives a fresh sparse run its pseudo-labels
(``teacher.py``: same features, same normalisation as the model will see, same pixel budget)
and predicts the plane on screen with it.
"""
from __future__ import annotations

import numpy as np

from ..base.errors import BTUnetError
from ..core.metadata import Normalization
from ..labels.annotations import infer_classes, targets_and_weights
from ..pipeline.planes import engine_image, image_channels, plane_index, plane_layout, spatial_of
from .predict import Prediction

#: painted planes the forest learns from, those nearest the previewed plane first: each costs
#: its plane's features (about 0.1 s for 512 x 512), and a few planes already hold plenty of
#: strokes for the ``teacher.MAX_TRAINING_PIXELS`` the forest is fitted on
MAX_PLANES = 3


def forest_preview(image, annotations, index: tuple = (), *, rgb: bool | None = None,
                   axes: str | None = None, seed: int = 0, normalization: str = "percentile") -> Prediction:
    """Plane ``index`` of ``image`` as the random forest on the strokes ``annotations`` sees it.

    ``annotations``: sparse labels of the image's spatial shape (0 = not painted, 1 = background,
    2.. = classes). ``normalization``: the method a new model would store
    (``FinetuneConfig.normalization``). Labels are 0/1 (object), or class ids 0..K when strokes
    name several classes; ``probabilities`` is the object probability. BTUnetError when fewer
    than two labels (background and an object class) are painted.
    """
    from ..train.teacher import class_probabilities, fit_forest, pixel_features
    raw = image
    image, rgb = engine_image(image, axes, rgb)
    labels = np.asarray(annotations)
    shape = spatial_of(tuple(image.shape), rgb)
    if tuple(labels.shape) != shape:
        raise BTUnetError(f"annotation shape {tuple(labels.shape)} does not match the image's planes {shape}")
    index = tuple(i % n for i, n in zip(plane_index(index, tuple(image.shape), rgb), shape[:-2], strict=True))
    n_classes = infer_classes(labels, "sparse")
    painted = painted_planes(labels, index)  # they hold every label painted anywhere
    if len(set().union(*(np.unique(labels[i]).tolist() for i in painted)) - {0}) < 2:
        raise BTUnetError("the quick preview needs strokes of background (1) and of an object (2)")
    layout = plane_layout(image, image_channels(raw, axes), rgb=rgb, normalization=Normalization(method=normalization))
    features, targets, masks = [], [], []
    for i in painted:
        target, weight = targets_and_weights(labels[i], "sparse", n_classes=n_classes)
        features.append(pixel_features(layout.read(image, i)))
        targets.append(target)
        masks.append(weight > 0)
    forest = fit_forest(features, targets, masks, seed)
    shown = features[painted.index(index)] if index in painted else pixel_features(layout.read(image, index))
    classes = class_probabilities(forest, shown, n_classes)
    probability = 1.0 - classes[0]
    if n_classes == 1:
        return Prediction((probability > 0.5).astype(np.uint8), probability)
    return Prediction(np.argmax(classes, axis=0).astype(np.uint8), probability, class_probabilities=classes)


def painted_planes(labels: np.ndarray, index: tuple, limit: int = MAX_PLANES) -> list[tuple[int, ...]]:
    """Up to ``limit`` plane indices of ``labels`` with strokes, nearest to plane ``index`` first;
    beyond ``limit``, the nearest plane holding a label the others lack (the forest needs them all)."""
    lead = labels.shape[:-2]
    planes = [tuple(int(v) for v in i) for i in np.ndindex(*lead)]
    planes.sort(key=lambda i: sum(abs(a - b) for a, b in zip(i, index, strict=True)))
    picked, seen = [], set()
    for i in planes:
        if not labels[i].any():
            continue
        values = set(np.unique(labels[i]).tolist()) - {0}
        if len(picked) < limit or values - seen:
            picked.append(i)
            seen |= values
    return picked


__all__ = ["MAX_PLANES", "forest_preview", "painted_planes"]
