"""The road every image takes, in training and in prediction: normalised planes, the model's
probabilities over them (tiled), uncertainty, the intensity reference of the training images, and
the threshold and the separation chosen on validation pixels."""
