"""Fine-tuning augmentations keep labels exact and leave intensities alone unless asked."""
import torch

from btunet.augment import finetune_augment


def _batch():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(6, 1, 16, 16, generator=g)
    target = (image > 0.5).float()
    weight = torch.ones_like(target)
    return image, target, weight


def test_flips_and_rotations_move_image_and_labels_together():
    image, target, weight = _batch()
    out, t, w = finetune_augment(image, target, weight, intensity=0.0, blur_noise=False,
                                 generator=torch.Generator().manual_seed(1))
    assert torch.equal(t, (out > 0.5).float())  # labels follow the pixels exactly
    for before, after in zip(image, out):  # same values, only moved
        assert torch.equal(before.flatten().sort().values, after.flatten().sort().values)
    assert not torch.equal(out, image)  # something was flipped or rotated
    assert torch.equal(w, weight)


def test_intensity_jitter_changes_values_only_when_asked():
    image, target, weight = _batch()
    out, t, _ = finetune_augment(image, target, weight, intensity=0.5, blur_noise=False,
                                 generator=torch.Generator().manual_seed(1))
    moved = [not torch.equal(a.flatten().sort().values, b.flatten().sort().values) for a, b in zip(image, out)]
    assert all(moved)
    assert t.sum() == target.sum()
