"""The Python API in one page, on the shipped BBBC007 sample (about a minute on 2 CPU cores).

    python examples/api_quickstart.py
"""
import btunet
from btunet.io.imageio import read_image
from btunet.io.sample import sample_paths

images, masks = sample_paths()

# 1. Barlow Twins pre-training of the encoder on unlabelled images (here: the sample's images).
encoder = btunet.pretrain(images, btunet.PretrainConfig(model="unet", epochs=3))
encoder.save("quickstart_encoder.safetensors")

# 2. Fine-tune on two annotated images (dense masks: 0 = background, > 0 = object).
#    For painted labels use mask_mode="sparse": 1 = background, 2 = object, 0 = ignored.
def report(p: btunet.Progress) -> None:
    if p.epoch_end:
        print(f"epoch {p.epoch}/{p.epochs}  loss {p.loss:.3f}  val Dice {p.val_dice}")

config = btunet.FinetuneConfig(model="unet", mask_mode="dense", epochs=8)
model = btunet.finetune(images[:2], masks[:2], config, encoder=encoder, on_progress=report)
btunet.save_model(model, "quickstart_model.safetensors")

# 3. Predict (any size, any stack; numpy, memmap, dask or zarr) and evaluate.
for image_path, mask_path in zip(images[2:5], masks[2:5], strict=True):
    result = btunet.predict("quickstart_model.safetensors", read_image(image_path), instances=True)
    scores = btunet.evaluate(result.labels, read_image(mask_path), objects=True)
    print(image_path.name, {k: round(v, 3) for k, v in scores.items()})
