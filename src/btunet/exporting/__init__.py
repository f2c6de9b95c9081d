"""Models that leave napari: TorchScript, ONNX and bioimage.io packages (``btunet export``)."""
