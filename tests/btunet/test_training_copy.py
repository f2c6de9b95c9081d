"""Previews of a model that is still training reuse one inference copy and see its latest weights."""
import numpy as np
import torch

from btunet.models import create_model
from btunet.pipeline.planes import as_model, predict_logits


def test_a_training_model_is_previewed_through_one_kept_copy_with_its_current_weights():
    torch.manual_seed(0)
    model = create_model("unet", in_channels=1, out_channels=1, base_filters=4).train()
    model.metadata = {"threshold": 0.4}
    pixels = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
    first = as_model(model, torch.device("cpu"), live=True)
    assert model.training and not first.training  # the training model keeps its mode
    with torch.no_grad():  # a training step changes the weights
        for p in model.parameters():
            p.add_(0.01)
    model.metadata = {"threshold": 0.6}
    second = as_model(model, torch.device("cpu"), live=True)
    assert second is first  # copied once, refreshed since
    assert second.metadata == {"threshold": 0.6}
    model.eval()
    expected = predict_logits(model, pixels, fast=False)  # the model itself, eval mode, fused copy
    got = predict_logits(second, pixels, fast=False)
    np.testing.assert_allclose(got, expected, atol=1e-4)  # not the weights of the first call


def test_a_trained_model_is_still_folded_into_a_fresh_copy():
    model = create_model("unet", in_channels=1, out_channels=1, base_filters=4).eval()
    a, b = as_model(model, torch.device("cpu"), live=True), as_model(model, torch.device("cpu"), live=True)
    assert a is not b and a.fused_batchnorms > 0


def test_the_final_preview_reuses_the_copy_and_other_threads_get_their_own():
    import threading
    model = create_model("unet", in_channels=1, out_channels=1, base_filters=4).train()
    during = as_model(model, torch.device("cpu"), live=True)
    model.eval()  # training ended: the same thread shows the final model
    assert as_model(model, torch.device("cpu"), live=True) is during
    elsewhere = []
    worker = threading.Thread(target=lambda: elsewhere.append(as_model(model, torch.device("cpu"), live=True)))
    worker.start()
    worker.join()
    assert elsewhere[0] is not during and elsewhere[0].fused_batchnorms > 0


def test_predictions_of_a_model_in_training_mode_still_fold_batchnorm():
    """A model rebuilt from weights (e.g. on a dask worker) is in training mode: predict folds it as
    always, so a checkpoint and its weights give identical labels."""
    model = create_model("unet", in_channels=1, out_channels=1, base_filters=4).train()
    net = as_model(model, torch.device("cpu"))
    assert net.fused_batchnorms > 0 and model.training
