"""Data: IDX parsing and named data sets with train / validation / test splits; unlabeled text (`text`)."""

from .datasets import (DATASETS, DatasetSplit, DataSplits, Split, as_split, data_identity, find_files, from_datasets,
                       load, load_split)
from .idx import parse_idx, read_idx, read_idx_pair
from .text import load_text, read_passages, split_passages

__all__ = ["DATASETS", "DatasetSplit", "DataSplits", "Split", "as_split", "from_datasets", "data_identity", "find_files", "load", "load_split", "parse_idx", "read_idx", "read_idx_pair",
           "load_text", "read_passages", "split_passages"]
