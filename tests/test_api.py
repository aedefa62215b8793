"""deepzip.load: a plain, fast model by default; the compression state on request."""

from pathlib import Path

import pytest
import torch

import deepzip
from deepzip import models
from deepzip.prune import get_masks
from deepzip.quantize import codebooks
from deepzip.runtime.timing import interleaved

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def plain_twin(loaded):
    """A freshly built module of the same architecture holding the loaded weights: the speed to match."""
    twin = models.from_description(loaded._deepzip_description)
    twin.load_state_dict(loaded.state_dict())
    return twin


@pytest.mark.parametrize("name", ["lenet300_100", "lenet5"])
def test_load_materialises_weights_once_and_matches_the_state_keeping_form(name):
    path = RESULTS / f"{name}.dz"
    fast, kept = deepzip.load(path), deepzip.load(path, keep_state=True)
    assert codebooks(kept) and get_masks(kept)  # the state-keeping form is what fine-tuning needs
    assert not codebooks(fast) and not get_masks(fast)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in fast.modules())
    assert all(type(p) is torch.nn.Parameter for p in fast.parameters())
    x = torch.randn(4, *fast._deepzip_description.get("input_shape", (1, 28, 28)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fast(x), kept(x))  # bit-identical outputs


def test_loaded_model_runs_at_plain_module_speed():
    path = RESULTS / "lenet300_100.dz"
    fast, kept = deepzip.load(path).eval(), deepzip.load(path, keep_state=True).eval()
    plain = plain_twin(fast).eval()
    x = torch.randn(1, 1, 28, 28)
    times = interleaved({"loaded": lambda: fast(x), "plain": lambda: plain(x), "kept": lambda: kept(x)}, repeats=300)
    # the state-keeping form rebuilds every weight per call (several times slower): the measurement can tell
    assert times["kept"] > 1.5 * times["plain"]
    assert times["loaded"] < 1.1 * times["plain"] * 1.1  # 1.1x target, plus 10% for this shared machine's noise


def test_keep_state_must_be_a_bool():
    with pytest.raises(TypeError, match="keep_state must be True or False"):
        deepzip.load(RESULTS / "lenet5.dz", keep_state="yes")
