"""The Python API refuses what it cannot use with a BTUnetError before any work, and accepts
the forms an array comes in (lists, paths)."""
import numpy as np
import pytest
import tifffile

import btunet
from btunet import BTUnetError


@pytest.fixture(scope="module")
def model():
    return btunet.create_model("unet", base_filters=4).eval()


@pytest.mark.parametrize("image, message", [
    (None, "no image given"), ({"a": 1}, "cannot use a dict"), (["a", "b"], "cannot use a list"),
    (np.zeros((0, 16)), "is empty"), (np.zeros(10), "Y and X"), ("missing.tif", "cannot read image"),
])
def test_predict_refuses_what_is_not_an_image(model, image, message):
    with pytest.raises(BTUnetError, match=message):
        btunet.predict(model, image, device="cpu")


def test_predict_takes_a_nested_list_and_a_path_like_the_array(model, tmp_path):
    image = np.random.default_rng(0).random((32, 48)).astype(np.float32)
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, image)
    from_array = btunet.predict(model, image, device="cpu", probabilities=True)
    from_list = btunet.predict(model, image.tolist(), device="cpu", probabilities=True)
    from_path = btunet.predict(model, str(path), device="cpu", probabilities=True)
    assert np.allclose(from_list.probabilities, from_array.probabilities, atol=1e-6)
    assert np.array_equal(from_path.labels, from_array.labels)


@pytest.mark.parametrize("call", [lambda: btunet.finetune(None, None), lambda: btunet.pretrain(None),
                                  lambda: btunet.pretrain(3.5)])
def test_training_refuses_no_images(call):
    with pytest.raises(BTUnetError, match="images"):
        call()
