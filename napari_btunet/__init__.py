"""napari-btunet: Barlow Twins pre-training, fine-tuning from a few painted labels and batch
prediction of U-Net variants, as three napari widgets over the Qt-free ``btunet`` engine.

Importing this package is cheap: torch and the engine are imported when a widget opens.
"""
from importlib.metadata import PackageNotFoundError, version

try:  # the one version source is setup.cfg, read back from the installed distribution
    __version__ = version("napari-btunet")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
