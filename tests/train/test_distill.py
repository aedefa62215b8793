import copy

import pytest
import torch

import deepzip
from deepzip.prune import Wanda, get_masks
from deepzip.train import distill

from ..calibrate.conftest import tiny_bert, token_batches


def pruned_pair():
    teacher = tiny_bert()
    student = copy.deepcopy(teacher)
    deepzip.prune(student, Wanda(sparsity=0.6), calibration=token_batches(count=2), progress=False)
    return student, teacher


@pytest.mark.parametrize("loss,target", [("cosine", "output"), ("mse", "hidden"), ("cosine", "mean")])
def test_distillation_lowers_the_loss_and_keeps_the_sparsity(loss, target):
    student, teacher = pruned_pair()
    masks = {n: m.clone() for n, m in get_masks(student).items()}
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = distill(student, teacher, token_batches(count=6), steps=40, lr=3e-3, loss=loss, target=target,
                     progress=False)
    assert len(result.losses) == 40 and result.last < 0.7 * result.first, (result.first, result.last)
    for name, mask in get_masks(student).items():
        assert torch.equal(mask, masks[name])
        weight = student.get_submodule(name.rsplit(".", 1)[0]).weight
        assert (weight[~mask] == 0).all() and not torch.signbit(weight[~mask]).any()
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())


def test_weight_shared_students_train_their_centroids():
    student, teacher = pruned_pair()
    deepzip.quantize(student, 4, exclude=["embeddings.word_embeddings", "embeddings.position_embeddings",
                                          "embeddings.token_type_embeddings"])
    name = "encoder.layer.0.intermediate.dense"
    index = student.get_submodule(name).weight_index.clone()
    codebook = student.get_submodule(name).weight_codebook.detach().clone()
    result = distill(student, teacher, token_batches(count=4), steps=20, lr=3e-3, progress=False)
    assert result.last < result.first
    assert torch.equal(student.get_submodule(name).weight_index, index)
    assert not torch.equal(student.get_submodule(name).weight_codebook, codebook)
    assert len(torch.unique(student.get_submodule(name).weight)) <= 16 + 1


def test_a_killed_distillation_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import deepzip.train.distillation as module

    batches = token_batches(count=3)
    straight, teacher = pruned_pair()
    expected = distill(straight, teacher, batches, steps=12, lr=1e-3, progress=False)
    real, calls = module.features, []

    def crashing(*args):
        calls.append(1)
        if len(calls) > 2 * 8:  # teacher + student per step: dies in step 9, after the save at step 6
            raise RuntimeError("killed")
        return real(*args)

    monkeypatch.setattr(module, "features", crashing)
    killed, _ = pruned_pair()
    with pytest.raises(RuntimeError, match="killed"):
        distill(killed, teacher, batches, steps=12, lr=1e-3, checkpoint=tmp_path / "d.st", save_every=6, progress=False)
    monkeypatch.setattr(module, "features", real)
    fresh, _ = pruned_pair()
    result = distill(fresh, teacher, batches, steps=12, lr=1e-3, checkpoint=tmp_path / "d.st", save_every=6,
                     progress=False)
    assert result.losses == expected.losses
    for (name, a), b in zip(straight.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_distillation_arguments():
    student, teacher = pruned_pair()
    with pytest.raises(ValueError, match="loss='l1' is not allowed; choose from cosine, mse"):
        distill(student, teacher, token_batches(), loss="l1")
    with pytest.raises(ValueError, match="non-empty"):
        distill(student, teacher, [])
    with pytest.raises(ValueError, match="same module"):
        distill(teacher, teacher, token_batches())
