import json
import re
import subprocess
import sys

import pytest

import deepzip
from deepzip import models
from deepzip.cli import main


def test_train_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--lr LR" in out and "(default: 0.0012)" in out and "--resume" in out


COMMANDS_WITH = {  # every command (and lottery action) with an option its help must explain
    (): "COMMAND", ("demo",): "--runs-dir", ("train",): "--epochs", ("prune",): "--method {global,uniform,erk",
    ("sensitivity",): "--sparsities", ("quantize",): "--method {kmeans,weighted,uniform}", ("compress",): "--prune-method",
    ("inspect",): "file", ("evaluate",): "--data-dir", ("decompress",): "--output", ("bench",): "--repeats",
    ("lottery",): "ACTION", ("lottery", "run"): "--jobs", ("lottery", "status"): "directory",
    ("lottery", "plot"): "directory", ("sparse-train",): "--method {static,set,rigl,snfs,srste}",
    ("sweep",): "ACTION", ("sweep", "run"): "--sparsities", ("sweep", "status"): "directory",
    ("compress-pretrained",): "--method {wanda,sparsegpt,owl}",
}


@pytest.mark.parametrize("command", list(COMMANDS_WITH))
def test_every_command_has_help(command, capsys):
    from deepzip.cli import COMMANDS

    assert {c[0] for c in COMMANDS_WITH if c} == set(COMMANDS)  # a new command must join this table
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: deepzip") and COMMANDS_WITH[command] in out


def test_train_on_digits_writes_run_dir(tmp_path, capsys):
    code = main(["train", "--dataset", "digits", "--val-size", "300", "--epochs", "2", "--batch-size", "32",
                 "--runs-dir", str(tmp_path), "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    run_dir = tmp_path / summary["run_dir"].split("/")[-1]
    assert {p.name for p in run_dir.iterdir()} == {"config.json", "metrics.jsonl", "model.safetensors", "summary.json"}
    assert summary["test_acc"] > 0.8


def test_bad_input_is_one_line_no_traceback():
    result = subprocess.run([sys.executable, "-m", "deepzip", "train", "--lr", "-1"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "deepzip train: error: --lr must be > 0, got -1.0"


def test_prune_and_sensitivity_commands(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["train", "--dataset", "digits", "--val-size", "300", "--epochs", "2", "--batch-size", "32",
                 "--runs-dir", runs, "--quiet"]) == 0
    checkpoint = json.loads(capsys.readouterr().out)["run_dir"] + "/model.safetensors"
    assert main(["prune", "--checkpoint", checkpoint, "--sparsity", "0.8", "--method", "uniform",
                 "--retrain-epochs", "1", "--runs-dir", runs, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fc1.weight" in out and "20.00%" in out  # uniform 80%: every layer keeps 20%
    pruned = next((tmp_path / "runs").glob("prune_*/model.safetensors"))
    from deepzip import prune as P
    from deepzip.cli.common import load_checkpoint

    model, description, _ = load_checkpoint(pruned)
    assert P.sparsity_report(model)["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert description["prune_config"]["method"] == "uniform"

    plot = tmp_path / "sens.png"
    assert main(["sensitivity", "--checkpoint", checkpoint, "--sparsities", "0", "0.9", "-o", str(plot), "--quiet"]) == 0
    curves = json.loads(plot.with_suffix(".json").read_text())
    assert set(curves) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["prune", "--checkpoint", checkpoint, "--method", "nm", "--n", "5", "--m", "4"]) == 2
    assert "N:M needs N <= M, got 5:4" in capsys.readouterr().err


def test_quantize_command_writes_model_and_histograms(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["train", "--dataset", "digits", "--val-size", "300", "--epochs", "2", "--batch-size", "32",
                 "--runs-dir", runs, "--quiet"]) == 0
    checkpoint = json.loads(capsys.readouterr().out)["run_dir"] + "/model.safetensors"
    assert main(["quantize", "--checkpoint", checkpoint, "--bits-fc", "2", "--finetune-epochs", "1",
                 "--runs-dir", runs, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fc1.weight       " in out and "fine-tuned" in out
    run_dir = next((tmp_path / "runs").glob("quantize_*"))
    assert (run_dir / "codebooks.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["bits"] == {"fc1.weight": 2, "fc2.weight": 2, "fc3.weight": 2}
    from deepzip import quantize as Q
    from deepzip.cli.common import load_checkpoint

    model, _, _ = load_checkpoint(run_dir / "model.safetensors")
    assert all(len(cb) <= 4 for cb, _ in Q.codebooks(model).values())
    assert main(["quantize", "--checkpoint", checkpoint, "--bits-fc", "0"]) == 2
    assert "--bits-fc must be in 1..16, got 0" in capsys.readouterr().err


def test_lottery_commands(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["lottery", "run", "--dataset", "digits", "--train-val-size", "300", "--train-epochs", "1",
                 "--train-batch-size", "64", "--levels", "1", "--replicates", "1", "--controls", "random",
                 "--runs-dir", runs, "--quiet"]) == 0
    out = capsys.readouterr().out
    directory = out.splitlines()[0].split(": ")[1]
    assert "complete" in out
    assert main(["lottery", "status", directory]) == 0
    assert "3 finished steps of 3" in capsys.readouterr().out
    assert main(["lottery", "plot", directory, "-o", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "accuracy_vs_remaining.svg").exists()


def _help_paths(parser, prefix=()):
    import argparse

    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _help_paths(sub, prefix + (name,))


def test_help_of_every_command_and_subcommand(capsys):
    from deepzip.cli import build_parser

    paths = list(_help_paths(build_parser()))
    assert ("lottery", "run") in paths and ("compress",) in paths and len(paths) > 14
    for path in paths:
        with pytest.raises(SystemExit) as info:
            main([*path, "--help"])
        assert info.value.code == 0, path
        assert "usage: deepzip" in capsys.readouterr().out


def test_sparse_train_command_on_digits_and_resume_skip(tmp_path, capsys):
    argv = ["sparse-train", "--method", "rigl", "--sparsity", "0.8", "--update-interval", "10", "--dataset", "digits",
            "--val-size", "300", "--epochs", "2", "--batch-size", "32", "--runs-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "rigl" and out["iterations"] == 2 * 38 and out["mask_updates"] == 5  # 10..50 < 57
    assert abs(out["sparsity"] - 0.8) < 1e-3 and 0.2 < out["flops_ratio"] < 0.3
    run_dir = tmp_path / out["run_dir"].split("/")[-1]
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "metrics.jsonl", "model.safetensors", "sparse.json"}
    assert main(argv) == 0  # finished: loaded, not retrained; the same numbers
    assert json.loads(capsys.readouterr().out) == out


@pytest.mark.parametrize("args, message", [
    (["--method", "set", "--snfs-momentum", "0.5"],
     "deepzip sparse-train: error: --method: option snfs_momentum=0.5 does not apply to method 'set'; its options: dense_first, "
     "dense_last, distribution, drop_fraction, drop_schedule, end_fraction, exclude, sparsity, update_interval"),
    (["--method", "srste", "--sparsity", "0.95"],
     "deepzip sparse-train: error: --method: option sparsity=0.95 does not apply to method 'srste'; its options: decay, "
     "exclude, m, n"),
    (["--method", "rigl", "--distribution", "gaussian"],
     "deepzip sparse-train: error: --distribution: distribution='gaussian' is not allowed; choose from uniform, er, erk"),
    (["--method", "rigl", "--sparsity", "1.2"], "deepzip sparse-train: error: --sparsity must be in [0.0, 1.0), got 1.2"),
])
def test_sparse_train_bad_options_are_one_line_errors(args, message):
    result = subprocess.run([sys.executable, "-m", "deepzip", "sparse-train", *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == message


@pytest.mark.parametrize("fuse, line", [("on", "whole model compiled into one chain (fuse='on'): fc1 "),
                                        ("off", "whole model not compiled into one chain: fuse='off'")])
def test_bench_says_whether_the_model_runs_as_one_chain(tmp_path, capsys, fuse, line):
    model = models.build("lenet300_100", seed=0)
    deepzip.prune(model, sparsity=0.9)
    deepzip.save(model, tmp_path / "m.dz")
    assert main(["bench", str(tmp_path / "m.dz"), "--repeats", "3", "--mode", "sparse", "--fuse", fuse]) == 0
    out = capsys.readouterr().out
    assert line in out and "max output difference" in out


def test_bench_runs_weight_shared_layers_at_the_chosen_precision(tmp_path, capsys):
    model = models.build("lenet300_100", seed=0)
    deepzip.quantize(model, 4)
    deepzip.save(model, tmp_path / "m.dz")
    assert main(["bench", str(tmp_path / "m.dz"), "--repeats", "3", "--mode", "codes", "--fuse", "off",
                 "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"max output difference \d\.\de-0[5-9]\)", out)  # exact up to fp32 reassociation
    result = subprocess.run([sys.executable, "-m", "deepzip", "bench", str(tmp_path / "m.dz"), "--precision", "int4"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "argument --precision: invalid choice: 'int4' (choose from 'fp32', 'int8')" in result.stderr
