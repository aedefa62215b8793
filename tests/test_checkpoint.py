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
