import json

import pytest
import torch

from deepzip import models
from deepzip.errors import DeepzipError
from deepzip.train import TrainConfig, train

from ..conftest import Crash, crash_at

CFG = TrainConfig(model="lenet300_100", dataset="digits", batch_size=32, epochs=6, val_size=300, eval_every=20)


def fresh():
    return models.build("lenet300_100", input_shape=(1, 8, 8), seed=0)


def test_short_training_on_digits_reaches_accuracy(digits):
    result = train(fresh(), digits, CFG, progress=False)
    assert result.final["test_acc"] >= 0.93
    assert result.final["iteration"] == 6 * 38
    assert result.early_stop["val_loss"] == min(m["val_loss"] for m in result.metrics)


def test_same_seed_same_weights(digits):
    a, b = fresh(), fresh()
    train(a, digits, CFG, progress=False)
    train(b, digits, CFG, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_resumed_run_equals_uninterrupted(digits, tmp_path):
    reference = fresh()
    train(reference, digits, CFG, progress=False)

    model = fresh()
    with pytest.raises(Crash):  # killed after the evaluation at 60 and before the one at 80
        train(model, digits, CFG, run_dir=tmp_path, hooks=[crash_at(75)], progress=False)
    assert [json.loads(l)["iteration"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [20, 40, 60]
    with pytest.raises(DeepzipError, match="pass --resume"):
        train(fresh(), digits, CFG, run_dir=tmp_path, progress=False)

    resumed = fresh()
    result = train(resumed, digits, CFG, run_dir=tmp_path, resume=True, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(reference.state_dict().values(), resumed.state_dict().values()))
    assert [m["iteration"] for m in result.metrics][:4] == [20, 40, 60, 80]
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "checkpoint.safetensors").exists()

    # A finished run is not trained again: the saved model comes back.
    again = fresh()
    train(again, digits, CFG, run_dir=tmp_path, progress=False)
    assert torch.equal(again.fc1.weight, reference.fc1.weight)


@pytest.mark.parametrize("state, message", [
    ({"optimizer": {}, "scheduler": {}, "iteration": 3}, "lacks the field 'model'"),
    ({"model": {}, "optimizer": {}, "scheduler": {}, "iteration": "abc"}, "field 'iteration' must be a int"),
    ({"model": {}, "optimizer": {}, "scheduler": {}, "iteration": 10 ** 9}, "field 'iteration' 1000000000 is outside"),
    ({"model": {"fc1.weight": torch.zeros(2)}, "optimizer": {}, "scheduler": {}, "iteration": 3},
     "field 'model' does not fit this run"),
    ([1, 2], "a training state must be a dict"),
])
def test_resume_from_a_malformed_state_names_the_field(digits, tmp_path, state, message):
    from deepzip.checkpoint import save_state
    from deepzip.errors import CheckpointError

    model = fresh()
    with pytest.raises(Crash):
        train(model, digits, CFG, run_dir=tmp_path, hooks=[crash_at(25)], progress=False)
    save_state(tmp_path / "checkpoint.safetensors", state)
    with pytest.raises(CheckpointError, match=f"checkpoint.safetensors: .*{message}"):
        train(fresh(), digits, CFG, run_dir=tmp_path, resume=True, progress=False)
