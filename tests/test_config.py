import argparse
import dataclasses

import pytest

from deepzip.config import add_arguments, from_args, from_dict, hashname, to_dict
from deepzip.train import PruneConfig, QuantizeConfig, TrainConfig


def test_hashes_are_fixed_values():
    # Fixed values: a change here renames every existing run directory, so resumes would start over.
    assert hashname(TrainConfig(), "train") == "train_e63bf09ef0d9"
    assert hashname(TrainConfig(model="lenet5", epochs=3), "train") == "train_3fb5cafe3a36"
    assert hashname(PruneConfig(), "prune") == "prune_46b4e7b54f94"
    assert hashname(QuantizeConfig(bits_fc=4), "q") == "q_438a3e310435"


def test_hash_sensitive_to_every_field():
    base = hashname(TrainConfig(), "train")
    changed = {"model": "lenet5", "dataset": "digits", "optimizer": "sgd", "lr": 0.1, "momentum": 0.5,
               "weight_decay": 1e-4, "batch_size": 128, "epochs": 3, "lr_schedule": "cosine",
               "lr_step_epochs": 3, "lr_gamma": 0.5, "eval_every": 10, "val_size": 100, "seed": 7}
    assert set(changed) == {f.name for f in dataclasses.fields(TrainConfig)}
    names = {hashname(dataclasses.replace(TrainConfig(), **{k: v}), "train") for k, v in changed.items()}
    assert base not in names and len(names) == len(changed)


def test_hash_ignores_defaults_spelled_out():
    assert hashname(TrainConfig(lr=1.2e-3, seed=0), "train") == hashname(TrainConfig(), "train")


def test_cli_round_trip_and_validation():
    parser = argparse.ArgumentParser()
    add_arguments(parser, TrainConfig)
    cfg = from_args(TrainConfig, parser.parse_args(["--lr", "0.01", "--lr-schedule", "cosine", "--seed", "3"]))
    assert cfg == TrainConfig(lr=0.01, lr_schedule="cosine", seed=3)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig fields: colour"):
        from_dict(TrainConfig, {"colour": 1})
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="optimizer='rmsprop' is not allowed; choose from adam, sgd"):
        TrainConfig(optimizer="rmsprop")
