"""The documentation (README.md) of a bioimage.io package, generated from a model's metadata."""
from __future__ import annotations

from ..models import SegmentationModel

BT_UNET = (("Punn & Agarwal (2022): BT-Unet: a self-supervised learning framework for biomedical image "
            "segmentation using Barlow Twins with U-Net models. Machine Learning 111, arXiv:2112.03916"),
           "10.48550/arXiv.2112.03916")
VARIANTS = {"unet": "U-Net with residual separable blocks", "attention_unet": "Attention U-Net",
             "inception_unet": "Inception U-Net with hybrid pooling",
             "rca_iunet": "RCA-IUNet: residual cross-spatial attention inception U-Net"}


def documentation(model: SegmentationModel, tile, threshold: float, eps: float, checkpoint: str) -> str:
    """Markdown for the package, generated from the model's metadata."""
    from .. import __version__
    meta = getattr(model, "metadata", {}) or {}
    trained = meta.get("trained_on") or {}
    channels = "1 (grayscale)" if model.in_channels == 1 else "3 (RGB)"
    dice = [d for d in meta.get("val_dice_history") or [] if d is not None]
    best = meta.get("best_epoch")
    rows = [("variant", f"`{model.name}`: {VARIANTS.get(model.name, model.name)}"),
            ("input channels", channels),
            ("configuration", ", ".join(f"{k}={v}" for k, v in model.config.items() if k != "name")),
            ("trained on", ", ".join(trained.get("images", [])) or "not recorded"),
            ("planes / mask mode", f"{trained.get('planes', '?')} / {trained.get('mask_mode', '?')}"),
            ("annotated pixels", _pixels(trained.get("annotated_pixels"))),
            ("epochs (best)", f"{meta.get('epochs', '?')} ({best if best is not None else '?'})"),
            ("validation Dice at the best epoch",
             f"{dice[best - 1]:.3f}" if dice and best and best <= len(dice) else "not measured"),
            ("pre-trained encoder", _encoder(meta.get("encoder"))),
            ("continued from", _continued(meta.get("continued_from"))),
            ("trained", f"{meta.get('date', '?')} on {meta.get('device', '?')} in {meta.get('seconds', '?')} s"),
            ("library versions", ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items()))]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    field = ("Spectral pooling gives this variant a global receptive field: every output pixel depends "
             "a little on the whole image, so tiled prediction is close to, not equal to, whole-image "
             f"prediction. The halo of {tile.halo} px covers the convolutions' reach ({tile.radius} px); "
             "predict whole images where memory allows." if tile.global_field else
             f"The receptive field reaches {tile.radius} px to each side, so tiles that overlap by the "
             f"halo of {tile.halo} px and start on multiples of {tile.step} px give exactly the "
             "whole-image output.")
    return f"""# BT-Unet {model.name}, {channels} channel input

Binary segmentation of 2-D images: the network outputs the probability that a pixel belongs to
an object; threshold it at {threshold} for the mask (as napari-btunet does), and label connected
components for instances. Fine-tuned from a few painted labels with napari-btunet {__version__}
(Barlow Twins pre-training, BT-Unet: Punn & Agarwal 2022, arXiv:2112.03916).

## Training

| | |
|---|---|
{table}

## Input and output

- input `raw`: axes (batch, channel, y, x), {channels} channel(s), float32 raw intensities.
  Y and X must be {tile.min_size} + n x {tile.step} (the network down-samples four times: sizes
  are multiples of {tile.step}; the minimum leaves room for the halo). Pad other sizes first, for
  example by reflection at the bottom and right as napari-btunet does.
- output `probability`: axes (batch, channel, y, x), one channel, values 0-1, same Y and X.
- {field}

## Pre-processing

`scale_range` with percentiles {_norm(meta)} computed per sample, jointly over channel, y and x:
`(x - p_low) / (p_high - p_low)`, not clipped, as napari-btunet normalises for training and
prediction. The epsilon is {eps:g}, which vanishes in float32, so for a single 2-D image this is
exactly btunet's normalisation. Differences: btunet computes the percentiles once per stack
(every plane of a 3-D or time series shares them) and from a subsample when an image has more
than 2 million pixels or 16 planes, while this package computes them per 2-D sample; consumers that
tile may compute them per tile. btunet treats NaN/inf as 0.

## Use

- napari-btunet: `btunet predict package.zip images/ --out labels/` reads the attached
  `{checkpoint}` (the exact model, any image size, stacks); `btunet finetune --init package.zip`
  continues training it.
- bioimageio.core, Python: `bioimageio.core.predict(model="package.zip", inputs=image[None, None]
  .astype("float32"), blocksize_parameter=4)` then `.members["probability"]`. Block-wise, with the
  halo above, it reproduces napari-btunet's probabilities to 1e-5 wherever the halo does not reach
  the image border. Without `blocksize_parameter` it pads the whole image by the halo before the
  percentiles are taken, which shifts them slightly (about 0.002 in probability on the sample).
- bioimageio.core, command line: `bioimageio predict --inputs image.npy package.zip` with an
  array of shape (1, C, Y, X).
- deepImageJ (Fiji) and ilastik: install the .zip as a bioimage.io model; they run the
  TorchScript or ONNX weights and apply the pre-processing above.

## Weights

TorchScript and ONNX (opset 17) hold the same network: BatchNorm folded into the convolutions,
fp32, the sigmoid inside. There is no `pytorch_state_dict` entry: that format is read with
`torch.load` (pickle) and needs the architecture's Python source, while napari-btunet stores
weights only as safetensors; the safetensors checkpoint is attached instead.

## Citation

{BT_UNET[0]}. doi:{BT_UNET[1]}
"""


def _norm(meta: dict) -> str:
    norm = meta.get("normalization") or {"low": 1.0, "high": 99.8}
    return f"{norm['low']:g} and {norm['high']:g}"


def _pixels(counts) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items()) if counts else "not recorded"


def _encoder(encoder) -> str:
    if not encoder:
        return "none (trained from random initialisation)"
    trained = encoder.get("trained_on") or {}
    return f"Barlow Twins, {encoder.get('epochs', '?')} epochs on {trained.get('planes', '?')} planes"


def _continued(previous) -> str:
    if not previous:
        return "-"
    names = ", ".join((previous.get("trained_on") or {}).get("images", []))
    return f"a model trained {previous.get('epochs', '?')} epochs on {names or '?'}"
