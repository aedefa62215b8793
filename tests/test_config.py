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
               "lr_step_epochs": 3, "lr_gamma": 0.5, "eval_every": 10, "val_size": 100, "seed": 7,
               "device": "cuda", "amp": "bf16"}
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


def test_identity_joins_the_hash_only_when_given():
    import hashlib
    import json

    from deepzip.config import hash_configs, non_defaults

    cfg = TrainConfig(epochs=3)
    old = "train_" + hashlib.sha256(json.dumps({"type": "TrainConfig", **non_defaults(cfg)},
                                               sort_keys=True).encode()).hexdigest()[:12]
    assert hashname(cfg, "train") == hashname(cfg, "train", data=None) == old  # existing run names are kept
    assert hashname(cfg, "train", data="/a") != old != hashname(cfg, "train", data="/b") != hashname(cfg, "train", data="/a")
    assert hash_configs("c", train=cfg) == hash_configs("c", identity={"data": None}, train=cfg)
    assert hash_configs("c", identity={"data": "/a"}, train=cfg) != hash_configs("c", train=cfg)


def test_run_dir_depends_on_the_data_location(tmp_path):
    from deepzip.cli.common import run_dir

    def idx(directory):
        directory.mkdir()
        for stem, shape in (("train-images-idx3-ubyte", (3, 28, 28)), ("train-labels-idx1-ubyte", (3,)),
                            ("t10k-images-idx3-ubyte", (2, 28, 28)), ("t10k-labels-idx1-ubyte", (2,))):
            size = 1
            for s in shape:
                size *= s
            (directory / stem).write_bytes(bytes([0, 0, 8, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
                                           + bytes(size))
        return directory

    a, b = idx(tmp_path / "a"), idx(tmp_path / "b")
    names = {run_dir(argparse.Namespace(runs_dir="runs", data_dir=d), TrainConfig(), "train").name for d in (a, b, None)}
    assert len(names) == 3 and hashname(TrainConfig(), "train") in names
    again = run_dir(argparse.Namespace(runs_dir="runs", data_dir=str(a) + "/"), TrainConfig(), "train").name
    assert again in names  # the same directory spelled differently is the same data
    digits = TrainConfig(dataset="digits")
    assert run_dir(argparse.Namespace(runs_dir="r", data_dir=None), digits, "train").name == hashname(digits, "train")
