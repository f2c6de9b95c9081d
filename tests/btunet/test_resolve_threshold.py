"""One rule for the threshold a prediction uses: the given one, checked, else the model's own."""
import math

import numpy as np
import pytest

from btunet import BTUnetError
from btunet.pipeline.thresholds import resolve_threshold


def test_the_stored_threshold_is_used_when_none_is_given():
    assert resolve_threshold(0.35, None) == 0.35
    assert isinstance(resolve_threshold(0.35, None), float)


@pytest.mark.parametrize("given", [0.01, 0.5, 0.7, 0.99])
def test_a_given_threshold_wins(given):
    assert resolve_threshold(0.35, given) == given


@pytest.mark.parametrize("given", [math.nan, math.inf, -0.1, 0.0, 1.0, 1.5, "0.5", True, [0.5]])
def test_a_bad_threshold_is_one_clear_line(given):
    with pytest.raises(BTUnetError) as caught:
        resolve_threshold(0.5, given)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("threshold must be a finite number above 0 and below 1, got ")


def test_the_preview_refuses_a_bad_threshold_and_uses_a_good_one():
    """The live preview asks the same rule as predict: a given threshold wins, a bad one is one line."""
    import btunet
    from btunet import create_model
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    net = create_model("unet").eval()
    low = btunet.preview(net, image, threshold=0.01)
    high = btunet.preview(net, image, threshold=0.99)
    np.testing.assert_array_equal(low.labels, (low.probabilities > 0.01).astype(np.uint8))
    assert low.labels.sum() > high.labels.sum()
    with pytest.raises(BTUnetError, match="threshold must be"):
        btunet.preview(net, image, threshold=1.5)
