import pytest
import torch
from torch import nn

from deepzip.calibrate import find_blocks, input_statistics, sequential
from deepzip.errors import CheckpointError

from .conftest import tiny_bert, token_batches


def test_blocks_are_found_generically_or_by_name():
    model = tiny_bert()
    assert [n for n, _ in find_blocks(model)] == ["encoder.layer.0", "encoder.layer.1"]
    assert [n for n, _ in find_blocks(model, "encoder.layer")] == ["encoder.layer.0", "encoder.layer.1"]
    mlp = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    assert find_blocks(mlp) == [("", mlp)]
    with pytest.raises(ValueError, match="not a non-empty ModuleList.*encoder.layer"):
        find_blocks(model, "encoder")
    with pytest.raises(ValueError, match="model's own submodules"):
        find_blocks(model, [nn.Linear(2, 2)])


def test_without_compression_the_loop_sees_what_the_dense_model_sees():
    model = tiny_bert()
    batches = token_batches()
    dense = input_statistics(model, batches, gram=True)
    seen = {}

    def process(index, name, block, stats):
        seen.update(stats)
        return {"index": index}

    assert sequential(model, batches, process, gram=True, progress=False) == [{"index": 0}, {"index": 1}]
    assert len(seen) == 12 and all(k.startswith("encoder.layer.") for k in seen)
    for key, stats in seen.items():
        assert stats.count == dense[key].count
        torch.testing.assert_close(stats.sq_norm, dense[key].sq_norm, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(stats.gram, dense[key].gram, rtol=1e-5, atol=1e-4)


def test_each_block_sees_the_compressed_outputs_of_the_blocks_before():
    model = tiny_bert()
    batches = token_batches(count=2)
    sums = []

    def process(index, name, block, stats):
        sums.append(float(stats[f"{name}.attention.self.query.weight"].sq_norm.sum()))
        block.output.dense.weight.zero_()  # a drastic "compression"

    sequential(model, batches, process, progress=False)
    after = input_statistics(model, batches, names=["encoder.layer.1.attention.self.query"])
    assert sums[1] == pytest.approx(float(after["encoder.layer.1.attention.self.query.weight"].sq_norm.sum()), rel=1e-5)


def test_resume_continues_after_a_crash_and_refuses_another_run(tmp_path):
    batches = token_batches()

    def process_factory(crash_at=None, calls=None):
        def process(index, name, block, stats):
            if index == crash_at:
                raise RuntimeError("simulated crash")
            calls.append(index)
            w = block.intermediate.dense.weight
            scores = w.abs() * stats[f"{name}.intermediate.dense.weight"].norm.float()
            keep = scores >= scores.median()
            w.masked_fill_(~keep, 0.0)
            return {"weight": w.clone(), "layer": name}
        return process

    def restore(index, name, block, result):
        block.intermediate.dense.weight.copy_(result["weight"])

    straight = tiny_bert()
    calls = []
    sequential(straight, batches, process_factory(calls=calls), progress=False)
    resumed = tiny_bert()
    with pytest.raises(RuntimeError, match="simulated crash"):
        sequential(resumed, batches, process_factory(crash_at=1, calls=[]), restore=restore, checkpoint_dir=tmp_path,
                   progress=False)
    again = tiny_bert()  # a fresh process: the model as loaded, the finished block restored from disk
    calls = []
    results = sequential(again, batches, process_factory(calls=calls), restore=restore, checkpoint_dir=tmp_path,
                         progress=False)
    assert calls == [1] and [r["layer"] for r in results] == ["encoder.layer.0", "encoder.layer.1"]
    for (name, a), b in zip(straight.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="another calibration run.*data"):
        sequential(tiny_bert(), token_batches(seed=5), process_factory(calls=[]), restore=restore,
                   checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(TypeError, match="needs restore"):
        sequential(tiny_bert(), batches, process_factory(calls=[]), checkpoint_dir=tmp_path)
