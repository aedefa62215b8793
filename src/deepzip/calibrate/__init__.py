"""Calibration: what a model's layers see on unlabeled data, and the block-by-block loop that
calibration-aware compression (Wanda, SparseGPT, OWL, sensitivity-weighted k-means) runs on.

    stats = deepzip.calibrate.input_statistics(model, batches)         # {weight name: LayerStatistics}
    stats["encoder.layer.0.output.dense.weight"].sq_norm                # ||X_j||^2 per input feature

A core package: it imports only registry / validate / errors / checkpoint, and `prune` and `quantize`
build on it.

    sequential(model, batches, process, checkpoint_dir="calib")         # block by block, resumable

"""

from .sequential import capture_inputs, find_blocks, sequential
from .statistics import LayerStatistics, Recorder, input_statistics, statistic_layers

__all__ = ["LayerStatistics", "Recorder", "capture_inputs", "find_blocks", "input_statistics", "sequential",
           "statistic_layers"]
