"""Batched augmentations that run on the compute device (the loader never becomes the bottleneck)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# The 8 symmetries of the square as 2x2 matrices (rotations by 90 degrees, with and without flip).
_DIHEDRAL = torch.tensor([[[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]],
                          [[-1, 0], [0, 1]], [[1, 0], [0, -1]], [[0, 1], [1, 0]], [[0, -1], [-1, 0]]],
                         dtype=torch.float32)


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.56, 1.0),
                        generator: torch.Generator | None = None, return_theta: bool = False
                        ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random crop (area fraction in ``scale``) + flip/rot90, resized back to H x W.

    ``return_theta``: also return the (N, 2, 3) affines ``[sym * side | shift]`` that map a view's
    normalised (x, y) coordinates to the patch's (as ``F.affine_grid``), for dense objectives.
    """
    n, dev = x.shape[0], x.device
    side = torch.empty(n, device=dev).uniform_(*scale, generator=generator).sqrt()
    shift = (torch.rand(n, 2, device=dev, generator=generator) * 2 - 1) * (1 - side)[:, None]
    sym = _DIHEDRAL.to(dev)[torch.randint(0, 8, (n,), device=dev, generator=generator)]
    theta = torch.cat([sym * side[:, None, None], shift[:, :, None]], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return (out, theta) if return_theta else out


def _per_sample(n: int, low: float, high: float, device, generator) -> torch.Tensor:
    return torch.empty(n, 1, 1, 1, device=device).uniform_(low, high, generator=generator)


def intensity_jitter(x: torch.Tensor, strength: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Gamma, contrast and brightness changes per sample (microscopy intensities vary a lot)."""
    n, dev = x.shape[0], x.device
    gamma = torch.exp(_per_sample(n, -0.4 * strength, 0.4 * strength, dev, generator))
    x = x.clamp_min(0).pow(gamma)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _per_sample(n, 1 - 0.4 * strength, 1 + 0.4 * strength, dev, generator)
    brightness = _per_sample(n, -0.2 * strength, 0.2 * strength, dev, generator)
    return (x - mean) * contrast + mean + brightness


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample (sigma: shape (N,))."""
    n, c, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, K)
    flat = x.reshape(1, n * c, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect" if min(h, w) > radius else "replicate")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def blur_and_noise(x: torch.Tensor, p_blur: float = 0.5, p_noise: float = 0.5,
                   max_sigma: float = 1.5, max_noise: float = 0.08,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    sigma = torch.empty(n, device=dev).uniform_(min(0.1, max_sigma), max_sigma, generator=generator)
    use_blur = (torch.rand(n, 1, 1, 1, device=dev, generator=generator) < p_blur).to(x.dtype)
    if max_sigma > 0:  # 0: no blur (the same random draws, so the rest of the views stays as it was)
        x = use_blur * gaussian_blur(x, sigma) + (1 - use_blur) * x
    noise_std = _per_sample(n, 0, max_noise, dev, generator)
    use_noise = (torch.rand(n, 1, 1, 1, device=dev, generator=generator) < p_noise).to(x.dtype)
    return x + use_noise * noise_std * torch.randn(x.shape, device=dev, generator=generator)


def two_views(x: torch.Tensor, generator: torch.Generator | None = None, return_geometry: bool = False,
              intensity: float = 1.0, blur: float = 1.0) -> tuple[torch.Tensor, ...]:
    """The Barlow Twins pair: two independent augmentations of the same batch of patches.

    ``intensity`` scales how far the views' gamma, contrast and brightness differ: what differs
    between views the encoder learns to ignore, and where objects are told apart by their
    intensity level a milder jitter keeps that level in the features. ``blur`` scales the views'
    largest blur (sigma 1.5 px at 1): where in-focus objects are told from out-of-focus haze by
    their sharpness, blur invariance removes what tells them apart.

    ``return_geometry``: ``(view_a, view_b, theta_a, theta_b)`` with each view's crop affine
    (see :func:`random_resized_crop`); the views are the same as without it.
    """
    def view() -> tuple[torch.Tensor, torch.Tensor]:
        v, theta = random_resized_crop(x, generator=generator, return_theta=True)
        v = intensity_jitter(v, strength=intensity, generator=generator)
        return blur_and_noise(v, max_sigma=1.5 * blur, generator=generator), theta
    (view_a, theta_a), (view_b, theta_b) = view(), view()
    return (view_a, view_b, theta_a, theta_b) if return_geometry else (view_a, view_b)


def dihedral_batch(*tensors: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Apply the same random flip/rot90 to image, target and weight (labels stay exact)."""
    n = tensors[0].shape[0]
    ops = torch.randint(0, 8, (n,), generator=generator).tolist()
    out = [t.clone() for t in tensors]
    for i, op in enumerate(ops):
        for t in out:
            s = t[i]
            if op >= 4:
                s = s.flip(-1)
            t[i] = torch.rot90(s, op % 4, dims=(-2, -1)) if s.shape[-1] == s.shape[-2] else s
    return out


def finetune_augment(image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                     intensity: float = 0.0, blur_noise: bool = True,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """Label-exact flips/rotations, plus optional mild blur/noise and intensity jitter.

    Intensity jitter (gamma, contrast, brightness; ``intensity`` is its strength) is off by
    default: masks drawn at an intensity level teach the network that level, and jitter moves
    it, so boundaries drift inward (on BBBC007 it cost 0.02 Dice).
    """
    image, target, weight = dihedral_batch(image, target, weight, generator=generator)
    if intensity > 0:
        image = intensity_jitter(image, strength=intensity, generator=generator)
    if blur_noise:
        image = blur_and_noise(image, p_blur=0.2, p_noise=0.3, max_sigma=1.0, max_noise=0.04,
                               generator=generator)
    return image, target, weight


__all__ = ["two_views", "finetune_augment", "random_resized_crop", "gaussian_blur",
           "intensity_jitter", "blur_and_noise", "dihedral_batch"]
