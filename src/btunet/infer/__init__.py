"""Prediction: in memory or streamed (``predict``), one plane for the live preview, the forest's first
answer, and block-wise prediction of large images and zarr volumes with dask (``chunked``)."""
