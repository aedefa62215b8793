import json
from pathlib import Path

import pytest
import torch

from deepzip import models
from deepzip.checkpoint import load_model_file, load_state, save_model, save_state
from deepzip.errors import DeepzipError


def test_model_file_round_trip(tmp_path):
    model = models.build("lenet5", seed=0)
    save_model(tmp_path / "m.safetensors", model, {"model": "lenet5"})
    state, description = load_model_file(tmp_path / "m.safetensors")
    assert description == {"model": "lenet5"}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not list(tmp_path.glob("*.tmp"))


def test_state_round_trip_keeps_int_keys_and_nesting(tmp_path):
    model = models.build("lenet300_100", seed=0)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.zeros(2, 1, 28, 28)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "iteration": 5, "names": ["a", "b"]}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["iteration"] == 5 and back["names"] == ["a", "b"]
    assert set(back["optimizer"]["state"]) == {0, 1, 2, 3, 4, 5}
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    torch.optim.Adam(model.parameters()).load_state_dict(back["optimizer"])


def test_garbage_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(DeepzipError, match="bad: not a readable"):
        load_state(tmp_path / "bad")
    with pytest.raises(DeepzipError, match="not a readable model file"):
        load_model_file(tmp_path / "bad")


def test_atomic_write_honours_umask_fsyncs_and_cleans_up(tmp_path, monkeypatch):
    import os

    from deepzip.checkpoint import atomic_write, atomic_write_text

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
        assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert len(synced) >= 4  # the temporary file and the directory, for each write

    def fails(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.txt", fails)
    assert (tmp_path / "a.txt").read_text() == "hello"  # the old content, and no temporary file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_plots_are_written_atomically(tmp_path, monkeypatch):
    from deepzip.report import plots

    written = []
    real = plots._save_atomic
    monkeypatch.setattr(plots, "_save_atomic", lambda fig, path: (written.append(path), real(fig, path)))
    path = plots.sensitivity_plot({"fc1.weight": [(0.0, 0.9), (0.5, 0.8)]}, tmp_path / "s.png")
    assert written == [path] and path.read_bytes()[:4] == b"\x89PNG"
    svg = plots.sensitivity_plot({"fc1.weight": [(0.0, 0.9), (0.5, 0.8)]}, tmp_path / "s.svg")
    assert b"<svg" in svg.read_bytes()[:400]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png", "s.svg"]


# Malformed checkpoints and run files: one CheckpointError naming the file and the field.

from safetensors.torch import save_file  # noqa: E402

from deepzip.errors import CheckpointError  # noqa: E402


@pytest.mark.parametrize("skeleton, message", [
    ({"__dict__": [["model", {"__tensor__": "nope"}]]}, r"field s/model: names the tensor 'nope'"),
    ({"__dict__": [["a", {"b": 1}]]}, "field s/a: unknown object"),
    ({"__dict__": "x"}, "field s: a dict must be a list of \\[key, value\\] pairs"),
])
def test_state_skeleton_that_does_not_match_the_tensors(tmp_path, skeleton, message):
    path = tmp_path / "s.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"deepzip": json.dumps(skeleton)})
    with pytest.raises(CheckpointError, match=message):
        load_state(path)


@pytest.mark.parametrize("meta, message", [("{not json", "metadata 'deepzip' is not valid JSON"),
                                           ("[1, 2]", "must be a JSON object")])
def test_model_file_metadata_must_be_a_json_object(tmp_path, meta, message):
    path = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"deepzip": meta})
    with pytest.raises(CheckpointError, match=message):
        load_model_file(path)


def test_read_json_names_the_file(tmp_path):
    from deepzip.checkpoint import read_json

    (tmp_path / "summary.json").write_text('{"a": 1')
    with pytest.raises(CheckpointError, match="summary.json: not valid JSON"):
        read_json(tmp_path / "summary.json")


@pytest.mark.parametrize("change, message", [
    ({"input_shape": [1, 3000, 3000]}, "'fc1.weight' does not fit this model"),
    ({"input_shape": [1, 100000, 100000]}, "'input_shape' must be"),
    ({"num_classes": 10_000_000}, "'num_classes' must be"),
    ({"input_shape": "abc"}, "'input_shape' must be"),
    ({"model": "os.system"}, "unknown model 'os.system'"),
])
def test_checkpoint_description_checked_before_the_model_is_built(tmp_path, change, message):
    import resource

    from deepzip.cli.common import load_checkpoint

    model = models.build("lenet5", seed=0)
    description = {"model": "lenet5", "input_shape": [1, 28, 28], "num_classes": 10}
    path = tmp_path / "m.safetensors"
    save_model(path, model, {**description, **change})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with pytest.raises(CheckpointError, match=f"m.safetensors: .*{message}"):
        load_checkpoint(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before < 100
