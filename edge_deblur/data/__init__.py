"""Data: realistic blur synthesis (``blur``, numpy + OpenCV only) and datasets (``datasets``, torch).

Import the submodules directly: ``from edge_deblur.data.blur import synthesize`` works without torch,
``from edge_deblur.data.datasets import PairedDataset`` needs torch.
"""
