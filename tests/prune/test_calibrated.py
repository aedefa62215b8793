"""Wanda, SparseGPT and OWL: pure functions on small tensors, then the module layer on a tiny BERT."""

import itertools

import pytest
import torch
from torch import nn

import deepzip
from deepzip.calibrate import input_statistics
from deepzip.errors import CheckpointError
from deepzip.prune import OWL, SparseGPT, Wanda, allocate, criteria, get_masks, prune_calibrated
from deepzip.prune.sparsegpt import sparsegpt
from deepzip.prune.wanda import outlier_ratio, wanda_mask, wanda_scores

from ..calibrate.conftest import tiny_bert, token_batches


def correlated_inputs(tokens=512, features=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(features, features, generator=generator) * 0.3 + torch.eye(features)
    scales = torch.logspace(-1, 1, features)[torch.randperm(features, generator=generator)]
    return (torch.randn(tokens, features, generator=generator) @ mixing) * scales


def reconstruction_error(x, weight, new):
    return float((x @ weight.T - x @ new.T).pow(2).sum())


# --- pure functions -------------------------------------------------------------------------------

def test_row_mask_prunes_the_same_count_in_every_row():
    scores = torch.tensor([[1.0, 5.0, 3.0, 2.0, 4.0], [9.0, 8.0, 7.0, 6.0, 5.0]])
    mask = criteria.row_mask(scores, 0.4)
    assert mask.tolist() == [[False, True, True, False, True], [True, True, True, False, False]]


def test_wanda_scores_and_masks():
    weight = torch.tensor([[1.0, -2.0, 3.0, -4.0], [4.0, 3.0, -2.0, 1.0]])
    sq_norm = torch.tensor([16.0, 4.0, 1.0, 0.25], dtype=torch.float64)  # norms 4, 2, 1, 0.5
    scores = wanda_scores(weight, sq_norm)
    assert scores.tolist() == [[4.0, 4.0, 3.0, 2.0], [16.0, 6.0, 2.0, 0.5]]
    assert wanda_mask(weight, sq_norm, 0.5).tolist() == [[True, True, False, False], [True, True, False, False]]
    assert wanda_mask(weight, sq_norm, 0.5, compare="layer").tolist() == [[True, True, False, False],
                                                                        [True, True, False, False]]
    # the two lowest of the layer: 0.5, then the later of the tied 2.0s
    assert wanda_mask(weight, sq_norm, 0.25, compare="layer").tolist() == [[True, True, True, True],
                                                                         [True, True, False, False]]
    assert wanda_mask(weight, sq_norm, 0.0, n=1, m=2).tolist() == [[True, False, True, False], [True, False, True, False]]
    already = torch.tensor([[False, True, True, True], [True, True, True, True]])
    assert wanda_mask(weight, sq_norm, 0.5, pruned=already).tolist() == [[False, True, True, False],
                                                                        [True, True, False, False]]
    with pytest.raises(ValueError, match="one squared norm per input feature"):
        wanda_scores(weight, sq_norm[:3])


def test_outlier_ratio_and_owl_allocation():
    assert outlier_ratio([torch.tensor([1.0, 1.0, 1.0, 100.0]), torch.ones(6)], threshold=5.0) == pytest.approx(0.1)
    sparsities = allocate.owl([0.01, 0.03, 0.02, 0.05], target=0.6, limit=0.08)
    assert sum(sparsities) / 4 == pytest.approx(0.6)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.16)
    assert sparsities[3] == min(sparsities) and sparsities[0] == max(sparsities)  # more outliers, pruned less
    assert allocate.owl([0.02, 0.02], 0.5) == [0.5, 0.5]


def test_sparsegpt_with_a_fixed_mask_is_the_damped_least_squares_optimum():
    # Pruned columns to the left of the kept ones: the sweep's OBS updates are then exactly the
    # closed form w_K + H_KK^-1 H_KP w_P for the damped Hessian H = 2 X^T X + lambda I.
    x = correlated_inputs(tokens=64, features=6)
    weight = torch.randn(3, 6, generator=torch.Generator().manual_seed(3))
    gram = x.T.double() @ x.double()
    keep = torch.tensor([False, False, True, True, True, True]).expand(3, 6)
    new, mask = sparsegpt(weight, gram.float(), 0.0, blocksize=4, pruned=keep.clone())
    assert torch.equal(mask, keep)
    h = 2 * gram
    h += 0.01 * torch.diagonal(h).mean() * torch.eye(6, dtype=h.dtype)
    kept, gone = slice(2, 6), slice(0, 2)
    expected = weight.double()[:, kept] + (torch.linalg.solve(h[kept, kept], h[kept, gone]) @ weight.double()[:, gone].T).T
    torch.testing.assert_close(new[:, kept].double(), expected, rtol=1e-4, atol=1e-5)
    assert (new[:, gone] == 0).all() and not torch.signbit(new[:, gone]).any()  # +0.0


def test_sparsegpt_is_near_the_brute_force_best_mask_and_beats_magnitude():
    x = correlated_inputs(tokens=128, features=6, seed=4)
    weight = torch.randn(1, 6, generator=torch.Generator().manual_seed(5))
    gram = (x.T.double() @ x.double()).float()
    new, mask = sparsegpt(weight, gram, 0.5, percdamp=1e-6)
    err = reconstruction_error(x, weight, new)
    best = min(_least_squares_error(x, weight, kept) for kept in itertools.combinations(range(6), 3))
    magnitude = criteria.row_mask(weight.abs(), 0.5)
    assert int(mask.sum()) == 3
    assert best <= err * (1 + 1e-4) and err <= 1.5 * best
    assert err < reconstruction_error(x, weight, weight * magnitude)


def _least_squares_error(x, weight, kept):
    kept = list(kept)
    solution = torch.linalg.lstsq(x[:, kept].double(), (x.double() @ weight.double().T)).solution
    new = torch.zeros_like(weight, dtype=torch.float64)
    new[:, kept] = solution.T
    return reconstruction_error(x.double(), weight.double(), new)


def test_sparsegpt_sparsity_is_exact_per_row_per_layer_and_n_of_m():
    x = correlated_inputs(tokens=256, features=40)
    weight = torch.randn(7, 40, generator=torch.Generator().manual_seed(1))
    gram = x.T @ x
    _, rows = sparsegpt(weight, gram, 0.3, compare="row", blocksize=16)
    assert (rows.sum(1) == 28).all()
    _, layer = sparsegpt(weight, gram, 0.3, blocksize=16)
    assert int(layer.sum()) == 7 * 40 - 84 and not (layer.sum(1) == 28).all()  # adaptive across rows
    new, nm = sparsegpt(weight, gram, n=2, m=4, blocksize=16)
    assert (nm.reshape(7, 10, 4).sum(2) == 2).all()
    assert torch.equal(new != 0, nm)
    with pytest.raises(ValueError, match="multiple of M"):
        sparsegpt(weight, gram, n=2, m=3, blocksize=16)


def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude_on_correlated_inputs():
    x = correlated_inputs(tokens=1024, features=64, seed=2)
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(2))
    sq_norm = x.double().pow(2).sum(0)
    errors = {
        "magnitude": reconstruction_error(x, weight, weight * criteria.row_mask(weight.abs(), 0.5)),
        "wanda": reconstruction_error(x, weight, weight * wanda_mask(weight, sq_norm, 0.5)),
        "sparsegpt": reconstruction_error(x, weight, sparsegpt(weight, x.T @ x, 0.5, compare="row")[0]),
    }
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


# --- configs ----------------------------------------------------------------------------------------

def test_configs_validate_their_fields():
    assert deepzip.prune.resolve(0.6, "wanda") == Wanda(sparsity=0.6)
    assert SparseGPT().comparison == "layer" and Wanda().comparison == "row" and OWL(inner="sparsegpt").needs_gram
    with pytest.raises(ValueError, match="compare='col' is not allowed; choose from row, layer"):
        Wanda(compare="col")
    with pytest.raises(ValueError, match="0 < N <= M"):
        Wanda(n=3, m=2)
    with pytest.raises(ValueError, match="fixes the sparsity"):
        Wanda(n=2, m=4, sparsity=0.7)
    with pytest.raises(ValueError, match="multiple of M"):
        SparseGPT(n=2, m=3)
    with pytest.raises(ValueError, match="sparsity \\+- limit"):
        OWL(sparsity=0.95)
    with pytest.raises(ValueError, match="inner='sparsegpt'"):
        OWL(percdamp=0.1)
    with pytest.raises(ValueError, match="N:M use wanda or sparsegpt"):
        OWL(n=2, m=4)
    with pytest.raises(ValueError, match="extra parameters"):
        Wanda(extra=["embeddings.word_embeddings.weight"])
    with pytest.raises(TypeError, match="takes no option 'percdamp'"):
        deepzip.prune.resolve(0.5, "wanda", percdamp=0.1)


# --- the module layer on a tiny BERT --------------------------------------------------------------

BLOCK_LINEARS = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "intermediate.dense", "output.dense"]


def block_weights(model):
    return {f"encoder.layer.{i}.{n}.weight": model.get_submodule(f"encoder.layer.{i}.{n}").weight
            for i in range(2) for n in BLOCK_LINEARS}


@pytest.mark.parametrize("config", [Wanda(sparsity=0.5), SparseGPT(sparsity=0.5, compare="row")])
def test_per_row_sparsity_is_exact_and_only_block_linears_are_pruned(config):
    model = tiny_bert()
    pooler = model.pooler.dense.weight.detach().clone()
    deepzip.prune(model, config, calibration=token_batches(), progress=False)
    masks = get_masks(model)
    assert sorted(masks) == sorted(block_weights(model))
    for name, weight in block_weights(model).items():
        assert (masks[name].sum(1) == weight.shape[1] // 2).all(), name
        assert torch.equal(weight != 0, masks[name]) or (weight[masks[name]] == 0).sum() == 0
        assert (weight[~masks[name]] == 0).all()
    assert torch.equal(model.pooler.dense.weight, pooler)


def test_sparsegpt_updates_the_surviving_weights_and_wanda_does_not():
    dense = tiny_bert()
    wanda, gpt = tiny_bert(), tiny_bert()
    deepzip.prune(wanda, Wanda(), calibration=token_batches(), progress=False)
    deepzip.prune(gpt, SparseGPT(), calibration=token_batches(), progress=False)
    name = "encoder.layer.1.output.dense"
    before = dense.get_submodule(name).weight
    kept = get_masks(wanda)[name + ".weight"]
    assert torch.equal(wanda.get_submodule(name).weight[kept], before[kept])
    kept = get_masks(gpt)[name + ".weight"]
    assert not torch.equal(gpt.get_submodule(name).weight[kept], before[kept])
    assert int(kept.sum()) == kept.numel() // 2  # layer-wide exact


def test_n_of_m_pattern_is_exact_on_the_model():
    model = tiny_bert()
    deepzip.prune(model, method="wanda", n=2, m=4, calibration=token_batches(), progress=False)
    for name, mask in get_masks(model).items():
        assert (mask.reshape(mask.shape[0], -1, 4).sum(2) == 2).all(), name
    model = tiny_bert()
    deepzip.prune(model, SparseGPT(n=1, m=4), calibration=token_batches(), progress=False)
    assert all((m.reshape(m.shape[0], -1, 4).sum(2) == 1).all() for m in get_masks(model).values())


def test_sparsegpt_beats_wanda_beats_magnitude_on_the_model_outputs():
    batches = token_batches(count=8)
    reference = tiny_bert()
    with torch.no_grad():
        target = [reference(**b).last_hidden_state for b in batches]

    def error(config):
        model = tiny_bert()
        if isinstance(config, str):
            emb = ["embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings"]
            deepzip.prune(model, 0.5, "uniform", exclude=[*emb, "pooler.dense"])
        else:
            deepzip.prune(model, config, calibration=batches, progress=False)
        with torch.no_grad():
            return sum(float((model(**b).last_hidden_state - t).pow(2).mean()) for b, t in zip(batches, target))

    errors = {"magnitude": error("magnitude"), "wanda": error(Wanda(compare="layer")), "sparsegpt": error(SparseGPT())}
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


def test_owl_block_sparsities_average_to_the_target_and_differ():
    model = tiny_bert()
    with torch.no_grad():  # make block 1's scores outlier-heavy, as in real transformers' later layers
        model.encoder.layer[1].intermediate.dense.weight[:, :2] *= 20
    report = prune_calibrated(model, OWL(sparsity=0.5), token_batches(), progress=False)
    sparsities = report["sparsities"]
    assert list(sparsities) == ["encoder.layer.0", "encoder.layer.1"]
    assert sum(sparsities.values()) / 2 == pytest.approx(0.5)
    assert sparsities["encoder.layer.1"] == pytest.approx(0.42) and sparsities["encoder.layer.0"] == pytest.approx(0.58)
    masks = get_masks(model)
    for name, mask in masks.items():
        block = name[: len("encoder.layer.0")]
        expected = criteria.kept_count(mask.shape[1], sparsities[block])
        assert (mask.sum(1) == expected).all(), name


def test_resume_after_a_crash_gives_identical_results_and_a_failure_leaves_the_model_unchanged(tmp_path, monkeypatch):
    batches = token_batches()
    straight = tiny_bert()
    deepzip.prune(straight, SparseGPT(), calibration=batches, progress=False)

    import deepzip.prune.calibrated as calibrated

    real = calibrated.sparsegpt
    calls = []

    def crashing(weight, *args, **kwargs):
        calls.append(1)
        if len(calls) > 7:  # the second layer of the second block
            raise RuntimeError("simulated crash")
        return real(weight, *args, **kwargs)

    monkeypatch.setattr(calibrated, "sparsegpt", crashing)
    crashed = tiny_bert()
    with pytest.raises(RuntimeError, match="simulated crash"):
        deepzip.prune(crashed, SparseGPT(), calibration=batches, checkpoint_dir=tmp_path, progress=False)
    fresh = tiny_bert()
    for (name, a), b in zip(crashed.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name  # all or nothing
    assert not get_masks(crashed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block-0000.safetensors", "manifest.json"]

    calls.clear()
    monkeypatch.setattr(calibrated, "sparsegpt", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    deepzip.prune(crashed, SparseGPT(), calibration=batches, checkpoint_dir=tmp_path, progress=False)
    assert len(calls) == 6  # only the second block was computed again
    assert straight.state_dict().keys() == crashed.state_dict().keys()
    for (name, a), b in zip(straight.state_dict().items(), crashed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="another calibration run.*key"):
        deepzip.prune(tiny_bert(), Wanda(), calibration=batches, checkpoint_dir=tmp_path, progress=False)


def test_bad_calls_are_clear_errors():
    model = tiny_bert()
    with pytest.raises(TypeError, match="'wanda' needs calibration data"):
        deepzip.prune(model, Wanda())
    with pytest.raises(TypeError, match="uses only the weights; calibration=.*wanda, sparsegpt, owl"):
        deepzip.prune(model, 0.5, calibration=token_batches())
    with pytest.raises(TypeError, match="prune\\(model, config, calibration=batches\\)"):
        deepzip.prune.compute_masks(model, Wanda())
    with pytest.raises(ValueError, match="non-empty iterable"):
        deepzip.prune(model, Wanda(), calibration=[])
    with pytest.raises(ValueError, match="blocks='encoder' is not a non-empty ModuleList"):
        deepzip.prune(model, Wanda(blocks="encoder"), calibration=token_batches())
    with pytest.raises(TypeError, match="tensor or a dict of tensors"):
        deepzip.prune(model, Wanda(), calibration=["some text"])
    assert not get_masks(model)


def test_a_plain_mlp_is_one_block_and_existing_masks_stay_pruned():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    deepzip.prune(model, 0.25, "uniform")
    before = {n: m.clone() for n, m in get_masks(model).items()}
    batches = [torch.randn(32, 8) for _ in range(3)]
    deepzip.prune(model, SparseGPT(sparsity=0.5), calibration=batches, progress=False)
    for name, mask in get_masks(model).items():
        assert not (mask & ~before[name]).any() and int(mask.sum()) == mask.numel() // 2
    stats = input_statistics(model, batches)
    assert stats["0.weight"].count == 96
