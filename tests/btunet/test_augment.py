"""Fine-tuning augmentations keep labels exact and leave intensities alone unless asked."""
import torch

from btunet.train.augment import finetune_augment


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
    for before, after in zip(image, out, strict=True):  # same values, only moved
        assert torch.equal(before.flatten().sort().values, after.flatten().sort().values)
    assert not torch.equal(out, image)  # something was flipped or rotated
    assert torch.equal(w, weight)


def test_intensity_jitter_changes_values_only_when_asked():
    image, target, weight = _batch()
    out, t, _ = finetune_augment(image, target, weight, intensity=0.5, blur_noise=False,
                                 generator=torch.Generator().manual_seed(1))
    moved = [not torch.equal(a.flatten().sort().values, b.flatten().sort().values)
             for a, b in zip(image, out, strict=True)]
    assert all(moved)
    assert t.sum() == target.sum()


def test_view_intensity_scales_only_the_intensity_differences_between_views():
    import pytest

    from btunet import BTUnetError, PretrainConfig
    from btunet.train.augment import intensity_jitter, two_views
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0)) + 0.5
    assert torch.equal(intensity_jitter(x, strength=0.0, generator=torch.Generator().manual_seed(1)), x)
    views = {s: two_views(x, generator=torch.Generator().manual_seed(2), return_geometry=True, intensity=s)
             for s in (0.0, 0.25, 1.0)}
    for s in (0.25, 1.0):  # the same random stream: the same crops whatever the strength
        assert torch.equal(views[s][2], views[0.0][2]) and torch.equal(views[s][3], views[0.0][3])
    # a view's mean brightness departs from the input's more the stronger the jitter
    spread = {s: (v[0].mean(dim=(1, 2, 3)) - v[1].mean(dim=(1, 2, 3))).abs().mean().item()
              for s, v in views.items()}
    assert spread[0.0] < spread[0.25] < spread[1.0]
    assert PretrainConfig(view_intensity=0.25).view_intensity == 0.25
    for field in ("view_intensity", "view_blur"):
        for bad in (-0.1, 2.5, float("nan")):
            with pytest.raises(BTUnetError, match=field):
                PretrainConfig(**{field: bad})


def test_view_blur_zero_leaves_sharpness_and_the_other_draws_alone():
    from btunet.train.augment import blur_and_noise, gaussian_blur, two_views
    x = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    kept = blur_and_noise(x, max_sigma=0.0, p_blur=1.0, p_noise=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(kept, x)
    blurred = blur_and_noise(x, p_blur=1.0, p_noise=0.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(blurred, x, atol=1e-3)
    assert gaussian_blur(x, torch.full((8,), 1.0)).std() < x.std()  # blur removes high frequencies
    sharp = two_views(x, generator=torch.Generator().manual_seed(2), return_geometry=True, blur=0.0)
    soft = two_views(x, generator=torch.Generator().manual_seed(2), return_geometry=True)
    assert torch.equal(sharp[2], soft[2]) and torch.equal(sharp[3], soft[3])  # same crops
    # high-frequency energy (differences of neighbours) is higher without the blur
    def energy(v):
        return (v[..., 1:] - v[..., :-1]).abs().mean()
    assert energy(sharp[0]) > energy(soft[0])


def test_cli_refuses_a_view_intensity_out_of_range_in_one_line(tmp_path, capsys):
    from btunet.cli.commands import main
    assert main(["pretrain", str(tmp_path), "--out", str(tmp_path / "e.safetensors"), "--view-intensity", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "view-intensity" in err and "\n" not in err
    assert not (tmp_path / "e.safetensors").exists()
