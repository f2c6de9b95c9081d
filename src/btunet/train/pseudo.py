"""Pseudo-labels for the pixels nobody painted, and where a continuation should look.

A fresh run takes pseudo-labels from a random forest on the strokes (``teacher.py``); a
continuation after more painting also asks the current model, and centres its patches on the
painted pixels the model still gets wrong.

Strokes in a few planes of a stack leave the network blind to the rest of it: trained only on
painted planes it never sees, say, the hazy planes above and below the objects of a 3-D stack,
and fills them with objects. ``context_planes`` adds a few unpainted planes spread over the
stack; they learn only from the teacher's confident pseudo-labels, at a lower weight.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit

from ..core.config import FinetuneConfig
from ..core.metadata import DEFAULT_THRESHOLD
from ..labels.heads import head_of
from ..models import SegmentationModel
from ..pipeline.data import AnnotatedPlane
from ..pipeline.planes import plane_outputs, predict_logits

#: unpainted planes of each stack added to a sparse run, spread evenly over the stack
CONTEXT_PLANES = 4
#: their pseudo-labels' weight relative to the painted planes' (and so their share of patches):
#: enough to show the rest of the stack, too little to dilute what was painted
CONTEXT_WEIGHT = 0.5


def context_planes(images, annotations, channels: int, patch_size: int,
                   per_stack: int = CONTEXT_PLANES, normalization=None) -> list[AnnotatedPlane]:
    """Up to ``per_stack`` unpainted planes of every painted stack, evenly spread over its
    unpainted planes, with nothing painted on them. The first and last are skipped: on cells3d
    the stack's ends (pure haze, the easiest background) taught less than planes between them
    (docs/results_empty_planes.md)."""
    from ..io.imageio import is_rgb
    from ..pipeline.data import pad_to_min_size
    from ..pipeline.planes import plane_layout
    out = []
    for (name, image), (_, labels) in zip(images, annotations, strict=True):
        layout = plane_layout(image, channels, rgb=is_rgb(image), normalization=normalization)
        indices = layout.indices()
        painted = {i for i in indices if np.asarray(labels[i]).any()}
        free = [i for i in indices if i not in painted]
        if not painted or not free:
            continue
        spots = np.linspace(0, len(free) - 1, per_stack + 2)[1:-1]
        for pick in sorted({free[int(round(q))] for q in spots}):
            pixels = layout.read(image, pick)
            size = pixels.shape[-2:]
            zeros = pad_to_min_size(np.zeros((1,) + size, np.float32), patch_size, "constant")[0]
            out.append(AnnotatedPlane(pad_to_min_size(pixels, patch_size), zeros.copy(), zeros.copy(),
                                      zeros.copy(), name, size=tuple(size), context=True))
    return out


def add_pseudo_labels(planes: list[AnnotatedPlane], cfg: FinetuneConfig,
                      model_probs: list[np.ndarray] | None = None,
                      extra_features: Callable[[np.ndarray], np.ndarray] | None = None,
                      model_edges: bool = False) -> int:
    """Give confident pseudo-labels (weight ``cfg.pseudo_weight``) to unpainted pixels.

    A fresh run takes them from a forest trained on the strokes. A continuation
    (``model_probs``: the current model's probabilities) takes them from ``cfg.continue_teacher``:
    the current model ("model": it keeps what it learnt, and the new strokes change it only
    where they were painted), the new forest, or their mean ("mean"; "both": the mean, except
    that with ``model_edges`` the model alone teaches near its own edges, ``MODEL_EDGE_BAND``).
    Around painted pixels the current model gets wrong (corrections), the model's pseudo-labels
    are dropped (``overruled_by``) so they cannot outvote the correction, and the correction itself
    weighs ``cfg.correction_weight``. Painted pixels keep their own label, held-out pixels stay out.
    ``extra_features``: the forest's features beside its filters (``encoder_features``). Returns the
    number of pseudo-labelled pixels.
    """
    from .teacher import forest_probabilities, pseudo_targets
    teacher = cfg.continue_teacher if model_probs is not None else "forest"
    top = max(1, int(max(p.target.max() for p in planes)))
    n_classes = model_probs[0].shape[0] - 1 if model_probs is not None and model_probs[0].ndim == 3 else top
    own_edges = teacher == "both" and model_edges
    forest = (forest_probabilities([p.pixels for p in planes], [p.target for p in planes],
                                   [p.weight for p in planes], cfg.seed, n_classes, extra_features)
              if teacher != "model" else None)
    count = 0
    for k, p in enumerate(planes):
        painted = (p.weight > 0) | (p.val_weight > 0)
        if teacher == "forest":
            prob = forest[k]
        else:
            predicted = predicted_class(model_probs[k], cfg.threshold)
            prob = model_probs[k] if teacher == "model" else 0.5 * (model_probs[k] + forest[k])
            if own_edges:
                prob = np.where(near_edges(predicted), model_probs[k], prob)
        target, weight = pseudo_targets(prob, cfg.pseudo_confidence)
        if teacher != "forest":
            wrong = painted & (predicted != p.target)
            if wrong.any():
                weight[overruled_by(wrong, predicted, p.target, cfg.correction_radius)] = 0
                p.weight[wrong] *= cfg.correction_weight
        weight[painted] = 0
        if p.val_region is not None:  # no labels next to held-out pixels: they would leak into validation
            weight[p.val_region] = 0
        if p.size is not None:  # nor on the padding added to reach the patch size
            weight[p.size[0]:] = 0
            weight[:, p.size[1]:] = 0
        if cfg.pseudo_edge_weight > 0 and model_probs is None:  # a fresh run's forest: see edge_emphasis
            weight = towards_edges(target, weight, cfg.pseudo_edge_weight)
        p.painted = p.weight > 0
        if p.focus is None:
            p.focus = p.painted
        p.target = np.where(painted, p.target, target).astype(np.float32)
        weight *= cfg.pseudo_weight * (CONTEXT_WEIGHT if p.context else 1.0)
        p.weight = (p.weight + weight).astype(np.float32)
        count += int((weight > 0).sum())
    return count


#: px from the model's own edges where, from the second continuation on, the model alone gives the
#: pseudo-labels. A forest retrained on all strokes moves every edge by what the last strokes
#: say: after the first round (strokes in the haze) that thins a fresh model's fat objects
#: and helps; after strokes along rims it shrank every nucleus of unseen images (BBBC007 round 2:
#: 0.939 / 0.944 with the forest's edges, 0.968 / 0.972 without; benchmarks/interactive_notes.md)
MODEL_EDGE_BAND = 2


def near_edges(classes: np.ndarray, band: float = MODEL_EDGE_BAND) -> np.ndarray:
    """Pixels within ``band`` px of an edge of the class image ``classes``."""
    distance = edge_distance(classes)
    return np.zeros(classes.shape, bool) if distance is None else distance <= band


def edge_distance(labels: np.ndarray) -> np.ndarray | None:
    """Distance (px) to the nearest edge of the label image (a pixel with a 4-neighbour of another
    label); None without edges."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries
    edge = find_boundaries(labels.astype(np.int64), connectivity=1, mode="thick")
    return ndi.distance_transform_edt(~edge) if edge.any() else None


#: the farthest (px) a correction overrules the model's pseudo-labels, and how far beyond the
#: model's mistake it reaches (``overruled_by``)
CORRECTION_RADIUS = 12
CORRECTION_MARGIN = 2


def overruled_by(wrong: np.ndarray, predicted: np.ndarray, target: np.ndarray,
                 radius: float | None = None) -> np.ndarray:
    """The pixels whose pseudo-labels the corrections ``wrong`` (painted pixels where the model's
    class ``predicted`` is not the painted ``target``) overrule.

    ``radius`` None: each correction reaches as deep as it lies inside the model's mistake plus
    ``CORRECTION_MARGIN`` px, at most ``CORRECTION_RADIUS``. A background stroke in a false blob of
    the haze clears the blob; one along a nucleus the model draws a pixel too fat clears that rim
    and leaves the nucleus its labels. A fixed 12 px there stripped whole nuclei of their labels,
    the patches centred on the correction learnt from strokes alone, and the objects grew
    (BBBC007, round 2: Dice 0.83 against 0.95 with 3 px; benchmarks/interactive_notes.md).
    A number: that many px around every correction.
    """
    from scipy import ndimage as ndi
    if radius is not None:
        return ndi.distance_transform_edt(~wrong) <= radius
    reach = np.zeros(wrong.shape, np.float32)
    for c in np.unique(target[wrong]):
        mine = wrong & (target == c)
        right = predicted == c
        depth = ndi.distance_transform_edt(~right) if right.any() else np.full(wrong.shape, np.inf)
        reach[mine] = np.minimum(CORRECTION_RADIUS, np.ceil(depth[mine]) + CORRECTION_MARGIN)
    out = np.zeros(wrong.shape, bool)
    for r in np.unique(reach[wrong]):
        out |= ndi.distance_transform_edt(~(wrong & (reach == r))) <= r
    return out


#: width (Gaussian sigma, px) of the band around the teacher's edges that ``edge_emphasis`` weighs up
EDGE_SIGMA = 2.0


def towards_edges(target: np.ndarray, weight: np.ndarray, strength: float) -> np.ndarray:
    """``weight`` moved towards the edges of ``target`` (``edge_emphasis``) with its mean over the
    weighted pixels kept: a plane's pseudo-labels count as much as before against its strokes and
    against other planes (the unpainted planes of a stack have no edges to weigh up)."""
    labelled = weight > 0
    if not labelled.any():
        return weight
    factor = edge_emphasis(target, strength)
    return (weight * factor / factor[labelled].mean()).astype(np.float32)


def edge_emphasis(target: np.ndarray, strength: float, sigma: float = EDGE_SIGMA) -> np.ndarray:
    """Loss weight factor 1 + strength * exp(-d^2 / 2 sigma^2), d = distance to the nearest edge
    of the label image ``target`` (a pixel with a 4-neighbour of another label).

    Nobody paints the boundary: strokes sit inside objects and in empty background, and the
    pseudo-labels between them are a few pixels of edge among thousands of easy ones. Weighed
    like the rest, the network learns the edge last and generalises it fat (BBBC007: test
    precision 0.82-0.92 at recall 1.00, as wide as a one-pixel dilation); the weight map of
    Ronneberger et al. (2015) weighs up the same few pixels (benchmarks/interactive_notes.md).
    A continuation leaves its pseudo-labels flat: their edges are those of a forest that has
    just seen background painted into the haze, and weighed up they shrank every object
    (BBBC007 seed 2, one round: recall 0.96 -> 0.86).
    """
    distance = edge_distance(target)
    if distance is None:
        return np.ones(target.shape, np.float32)
    return (1 + strength * np.exp(-distance ** 2 / (2 * sigma ** 2))).astype(np.float32)


def model_probabilities(net: SegmentationModel, planes: list[AnnotatedPlane], fast: bool) -> list[np.ndarray]:
    """The model's object probability (H, W) of every plane; (K+1, H, W) class probabilities for
    a class model."""
    net.eval()
    if head_of(net).n_classes == 1:
        probs = [expit(predict_logits(net, p.pixels, fast=fast)) for p in planes]
    else:
        probs = [plane_outputs(net, p.pixels, fast=fast)["classes"] for p in planes]
    net.train()
    return probs


def predicted_class(prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Class index per pixel from an object probability (H, W) or class probabilities (K+1, H, W)."""
    if prob.ndim == 3:
        return np.argmax(prob, axis=0).astype(np.float32)
    return (prob > threshold).astype(np.float32)


def focus_on_errors(planes: list[AnnotatedPlane], probs: list[np.ndarray],
                    threshold: float = DEFAULT_THRESHOLD) -> int:
    """Centre continuation patches on painted pixels the current model gets wrong (new strokes).

    Returns how many painted pixels are wrong; with none, patches stay on all painted pixels.
    """
    wrong_total = 0
    for p, prob in zip(planes, probs, strict=True):
        painted = p.painted if p.painted is not None else p.weight > 0
        wrong = painted & (predicted_class(prob, threshold) != p.target)
        wrong_total += int(wrong.sum())
        p.focus = wrong
    if wrong_total == 0:
        for p in planes:
            p.focus = p.painted if p.painted is not None else p.weight > 0
    return wrong_total
