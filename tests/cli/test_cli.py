import json
import subprocess
import sys

import pytest

from deepzip.cli import main


def test_every_command_has_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--lr LR" in out and "(default: 0.0012)" in out and "--resume" in out


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
    assert result.stderr.strip() == "deepzip train: error: lr must be > 0, got -1.0"
