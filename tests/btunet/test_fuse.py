"""Folding BatchNorm into convolutions must not change what a model predicts."""
import pytest
import torch
from torch import nn

from btunet import predict
from btunet.models import MODELS, create_model
from btunet.models.fuse import fuse_batchnorm


def _with_random_statistics(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_(1.0, 0.2)
            module.bias.data.normal_(0.0, 0.2)
    return model.eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fused_model_predicts_the_same(name):
    model = _with_random_statistics(create_model(name, in_channels=1))
    fused = fuse_batchnorm(model)
    before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    after = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert fused.fused_batchnorms >= 0.8 * before and after == before - fused.fused_batchnorms
    x = torch.randn(2, 1, 48, 80)
    with torch.no_grad():
        assert torch.allclose(model(x), fused(x), atol=1e-4)


def test_original_model_is_untouched():
    model = create_model("unet", in_channels=1).train()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    predict(model, torch.rand(40, 40).numpy(), device="cpu")
    assert model.training
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 27
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["unet", "attention_unet", "inception_unet", "rca_iunet"])
def test_a_kept_folded_copy_refreshed_with_new_weights_equals_a_fresh_fold(name):
    from btunet.models.fuse import refresh_fused
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, out_channels=1, base_filters=4).train()
    kept = fuse_batchnorm(model)
    with torch.no_grad():  # a few training steps later: new weights and BatchNorm statistics
        model(torch.rand(2, 1, 32, 32))
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    refreshed, fresh = refresh_fused(kept, model).state_dict(), fuse_batchnorm(model).state_dict()
    assert refreshed.keys() == fresh.keys()
    assert all(torch.equal(refreshed[k], fresh[k]) for k in fresh)
