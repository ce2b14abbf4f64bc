"""The data names where earlier releases had them (`ramen.data.wikispeedia`, ...): see ramen.datasets."""
from ramen.datasets import (AnchorSet, Dataset, DatasetStats, describe, foldoc, load_xc, read_sparse, save_xc,
                            synthetic, wikispeedia, write_sparse)

__all__ = ["AnchorSet", "Dataset", "DatasetStats", "describe", "foldoc", "load_xc", "read_sparse", "save_xc",
           "synthetic", "wikispeedia", "write_sparse"]
