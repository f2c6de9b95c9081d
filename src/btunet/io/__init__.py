"""Reading: images and masks from files (``imageio``, ``tiff_reader``), their axes, image-mask pairs,
zarr stores, bioimage.io packages from ``btunet export``, and the shipped BBBC007 sample."""
