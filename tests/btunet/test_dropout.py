"""The CPU dropout of the variants (numpy-drawn masks) behaves as nn.Dropout."""
import torch

from btunet.models.dropout import Dropout


def test_the_mask_drops_p_scales_the_rest_and_keeps_the_layout():
    x = torch.rand(4, 8, 64, 64).to(memory_format=torch.channels_last) + 0.5
    y = Dropout(0.25).train()(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.01
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.75)
    assert y.is_contiguous(memory_format=torch.channels_last)
    z = Dropout(0.25).train()(x.contiguous())
    assert abs((z == 0).float().mean().item() - 0.25) < 0.01 and z.is_contiguous()


def test_torch_seed_fixes_the_mask_and_gradients_follow_it():
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    torch.manual_seed(5)
    a = Dropout(0.5).train()(x)
    torch.manual_seed(5)
    b = Dropout(0.5).train()(x)
    assert torch.equal(a, b)
    a.sum().backward()
    assert torch.equal(x.grad == 0, a == 0) and torch.allclose(x.grad[a != 0], torch.tensor(2.0))


def test_eval_and_other_shapes_are_nn_dropout():
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(Dropout(0.3).eval()(x), x)
    flat = torch.rand(5, 7)
    torch.manual_seed(1)
    expected = torch.nn.Dropout(0.3).train()(flat)
    torch.manual_seed(1)
    assert torch.equal(Dropout(0.3).train()(flat), expected)
