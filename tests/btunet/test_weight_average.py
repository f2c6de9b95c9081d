"""The moving average of the weights: the formula, and that fine-tuning previews and returns it."""
import numpy as np
import tifffile
import torch

from btunet import FinetuneConfig, create_model, finetune
from btunet.train.simulate import scribbles
from btunet.train.weight_average import WeightAverage


def test_average_follows_the_formula_against_a_naive_reference():
    torch.manual_seed(0)
    live = create_model("unet", base_filters=4)
    avg = WeightAverage(live, decay=0.8)
    expected = None
    for _ in range(4):
        with torch.no_grad():
            for p in live.parameters():
                p.add_(torch.randn_like(p))
            for b in live.buffers():
                if b.dtype.is_floating_point:
                    b.add_(1.0)
        now = {k: v.clone() for k, v in live.state_dict().items()}
        expected = now if expected is None else {
            k: (0.8 * expected[k] + 0.2 * v if v.dtype.is_floating_point else v) for k, v in now.items()}
        avg.update(live)
    got = avg.model.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in avg.model.parameters())
    assert any(not torch.equal(got[k], live.state_dict()[k]) for k in got)  # it lags the live weights


def test_finetune_previews_and_returns_the_average(sample):
    image, mask = (tifffile.imread(p[0])[100:228, 100:228] for p in sample)
    strokes = scribbles(mask, seed=0)
    cfg = FinetuneConfig(epochs=2, steps_per_epoch=3, batch_size=2, patch_size=64, device="cpu",
                         weight_average=0.5, pseudo_labels="none")
    shown = []
    net = finetune(image, strokes, cfg, on_progress=lambda p: shown.append(
        {k: v.clone() for k, v in p.model.state_dict().items()}))
    assert len(shown) == 6
    final = net.state_dict()
    for k, v in shown[-1].items():  # the last preview is the model returned
        torch.testing.assert_close(final[k], v)
    plain = finetune(image, strokes, FinetuneConfig(**{**cfg.__dict__, "weight_average": 0.0}))
    differ = [k for k, v in plain.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, final[k])]
    assert differ  # same seed and strokes: only the averaging differs
    assert net.metadata["finetune_config"]["weight_average"] == 0.5
    prob = np.asarray(net(torch.from_numpy(np.zeros((1, 1, 64, 64), np.float32))).detach())
    assert np.isfinite(prob).all()


def test_the_average_stands_in_only_once_it_has_forgotten_the_start():
    live = create_model("unet", base_filters=4)
    avg = WeightAverage(live, decay=0.97)
    settled_at = next(n for n in range(1, 500) if (avg.update(live) or avg.settled))
    assert settled_at == 100  # 0.97 ** 99 < 0.05 <= 0.97 ** 98: a continuation's 4 x 25 steps
    assert 0.97 ** (settled_at - 1) < 0.05 <= 0.97 ** (settled_at - 2)
