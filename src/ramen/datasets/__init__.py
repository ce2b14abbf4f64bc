"""Datasets: the Dataset type, the Extreme Classification Repository's files, and the built-in tasks.

`Dataset`, `AnchorSet`, `describe` (the RAMEN paper's Table 9 statistics); `load_xc`/`save_xc`
(the XC directory layout, or one `.npz` file) and `read_sparse`/`write_sparse` (one matrix file);
`wikispeedia` (a real task from the SNAP files), `foldoc` (one from the Free On-line Dictionary of
Computing) and `synthetic` (a benchmark whose hidden structure is known).
"""
from ramen.datasets.dataset import AnchorSet, Dataset, DatasetStats, describe
from ramen.datasets.foldoc import foldoc
from ramen.datasets.synthetic import synthetic
from ramen.datasets.wikispeedia import wikispeedia
from ramen.datasets.xc import load_xc, save_xc
from ramen.datasets.xc_format import read_sparse, write_sparse

__all__ = ["AnchorSet", "Dataset", "DatasetStats", "describe", "foldoc", "load_xc", "read_sparse", "save_xc",
           "synthetic", "wikispeedia", "write_sparse"]
