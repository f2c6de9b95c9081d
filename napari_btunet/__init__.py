"""napari-btunet: Barlow Twins pre-training, fine-tuning from a few painted labels and batch
prediction of U-Net variants, as three napari widgets over the Qt-free ``btunet`` engine.

Importing this package is cheap: torch and the engine are imported when a widget opens.
"""
__version__ = "0.1.0"

__all__ = ["__version__"]
