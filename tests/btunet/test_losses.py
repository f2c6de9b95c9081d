import itertools

import pytest
import torch

from btunet.train.losses import barlow_twins_loss, masked_bce_dice_loss


def naive_barlow_twins(z_a, z_b, lambd):
    """Element by element, straight from the formula."""
    n, d = z_a.shape
    za = [(z_a[:, i] - z_a[:, i].mean()) / z_a[:, i].std(unbiased=False) for i in range(d)]
    zb = [(z_b[:, j] - z_b[:, j].mean()) / z_b[:, j].std(unbiased=False) for j in range(d)]
    loss = 0.0
    for i, j in itertools.product(range(d), range(d)):
        c = float((za[i] * zb[j]).sum() / n)
        loss += (1 - c) ** 2 if i == j else lambd * c ** 2
    return loss


@pytest.mark.parametrize("n,d", [(8, 5), (16, 12)])
def test_barlow_twins_matches_naive_reference(n, d):
    torch.manual_seed(0)
    z_a, z_b = torch.randn(n, d), torch.randn(n, d)
    assert barlow_twins_loss(z_a, z_b, 5e-3).item() == pytest.approx(naive_barlow_twins(z_a, z_b, 5e-3), rel=1e-4)


def test_barlow_twins_is_near_zero_for_identical_decorrelated_views():
    z = torch.linalg.qr(torch.randn(64, 8))[0] * 8  # orthogonal columns: C = identity
    assert barlow_twins_loss(z, z).item() < 1e-2
    assert barlow_twins_loss(z, torch.randn(64, 8)).item() > 1.0


def test_masked_loss_ignores_unannotated_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    weight = torch.zeros(2, 1, 16, 16)
    weight[:, :, 4:8, 4:8] = 1
    masked_bce_dice_loss(logits, target, weight).backward()
    assert torch.all(logits.grad[weight == 0] == 0)
    assert torch.all(logits.grad[weight == 1] != 0)


def test_masked_loss_is_mean_of_bce_and_dice():
    logits = torch.tensor([[[[10.0, -10.0]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    weight = torch.ones_like(target)
    assert masked_bce_dice_loss(logits, target, weight).item() == pytest.approx(0.0, abs=1e-3)
    wrong = masked_bce_dice_loss(-logits, target, weight).item()
    assert wrong == pytest.approx(0.5 * (10.0 + (1 - 1 / 3)), rel=1e-3)
