"""Data: IDX parsing and named data sets with train / validation / test splits."""

from .datasets import DATASETS, DataSplits, Split, data_identity, find_files, load, load_split
from .idx import parse_idx, read_idx, read_idx_pair

__all__ = ["DATASETS", "DataSplits", "Split", "data_identity", "find_files", "load", "load_split", "parse_idx", "read_idx", "read_idx_pair"]
