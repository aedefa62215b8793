"""L0 gates (Louizos et al. 2018): the formulas, the gate state in the module, finishing into masks."""

import copy
import io
import math
import pickle

import pytest
import torch
from torch import nn

import deepzip
from deepzip import prune as P
from deepzip.prune import l0


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def test_gate_formulas_match_hand_values():
    assert l0.initial_log_alpha(0.5) == 0.0
    assert l0.initial_log_alpha(0.2) == pytest.approx(math.log(4))
    la = torch.tensor([0.0, 3.0, -3.0])
    # P(z != 0) = sigmoid(log_alpha - beta log(-gamma / zeta)), beta 2/3, gamma -0.1, zeta 1.1
    shift = (2 / 3) * math.log(0.1 / 1.1)
    expected = [1 / (1 + math.exp(-(v - shift))) for v in (0.0, 3.0, -3.0)]
    assert l0.prob_nonzero(la).tolist() == pytest.approx(expected, rel=1e-6)
    assert l0.prob_nonzero(torch.tensor(0.0)).item() == pytest.approx(0.8318, abs=1e-4)
    # test time: min(1, max(0, sigmoid(la) * 1.2 - 0.1))
    assert l0.deterministic_gates(la).tolist() == pytest.approx([0.5, 1.0, 0.0], abs=1e-6)
    assert l0.deterministic_gates(torch.tensor(1.0)).item() == pytest.approx(0.7310586 * 1.2 - 0.1, rel=1e-6)
    # the open threshold: sigmoid(la) = 1/12
    assert l0.open_threshold() == pytest.approx(math.log(1 / 11))
    # sampling: u = 0.5 gives s = sigmoid(la / beta); u = 0.9 stretches it past 1, clamped
    u = torch.tensor([0.5, 0.5, 0.9])
    got = l0.sample_gates(torch.tensor([0.0, -1.0, 3.0]), u)
    assert got.tolist() == pytest.approx([0.5, 1 / (1 + math.exp(1.5)) * 1.2 - 0.1, 1.0], abs=1e-6)
    assert l0.sample_gates(torch.tensor([-8.0]), torch.tensor([0.5])).item() == 0.0


def test_sampled_gates_are_differentiable_and_their_mean_matches_prob_nonzero():
    la = torch.full((200_000,), 0.7, requires_grad=True)
    z = l0.sample_gates(la, torch.rand(la.shape, generator=torch.Generator().manual_seed(1)).clamp(1e-6, 1 - 1e-6))
    assert (z > 0).float().mean().item() == pytest.approx(l0.prob_nonzero(torch.tensor(0.7)).item(), abs=0.005)
    z.sum().backward()
    assert la.grad.abs().sum() > 0


def test_install_gates_state_forward_and_eval():
    model = _model()
    dense = copy.deepcopy(model)
    names = l0.install_gates(model)
    assert names == ["0.weight", "2.weight"]
    keys = set(model.state_dict())
    assert {"0.weight_orig", "0.weight_log_alpha", "0.weight_gate_draws", "2.weight_log_alpha"} <= keys
    assert "0.weight" not in keys
    la = model[0].weight_log_alpha
    assert la.mean().item() == pytest.approx(0.0, abs=0.01) and 0 < la.std().item() < 0.02
    x = torch.randn(4, 6)
    model.eval()
    # deterministic gates at log_alpha ~ 0: z = 0.5 (to 1%): the layer computes with half its weights
    assert torch.allclose(model[0].weight, dense[0].weight * l0.deterministic_gates(la.detach()))
    assert torch.equal(model(x), model(x))
    model.train()
    first, second = model(x), model(x)  # fresh gates per forward
    assert not torch.equal(first, second) and int(model[0].weight_gate_draws) == 2
    assert not model[0].weight.requires_grad  # the attribute keeps a detached copy after the forward


def test_gate_noise_is_repeatable_from_the_draw_count():
    a, x = _model(), torch.randn(3, 6)
    l0.install_gates(a, seed=3)
    b = copy.deepcopy(a)
    a.train(), b.train()
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), b(x))
    other = _model()
    l0.install_gates(other, seed=4)
    other.load_state_dict(a.state_dict())  # same state, other seed: other noise
    assert not torch.equal(other.train()(x), a(x))


def test_gate_state_survives_deepcopy_pickle_and_state_dict():
    model = _model()
    l0.install_gates(model)
    with torch.no_grad():
        model[0].weight_log_alpha.uniform_(-4, 4)
    model.eval()
    x = torch.randn(5, 6)
    expected = model(x)
    assert torch.equal(copy.deepcopy(model)(x), expected)
    assert torch.equal(pickle.loads(pickle.dumps(model))(x), expected)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    fresh = _model(seed=5)
    deepzip.load_state_dict(fresh, torch.load(io.BytesIO(buffer.getvalue())))  # installs the gates first
    assert set(l0.gated_layers(fresh)) == {"0.weight", "2.weight"}
    assert torch.equal(fresh.eval()(x), expected)
    assert torch.equal(fresh[0].weight, model[0].weight)  # refreshed without a forward


def test_gradients_reach_weights_and_gates_and_respect_existing_masks():
    model = _model()
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[:, 0] = False
    P.apply_masks(model, {"0.weight": mask})
    l0.install_gates(model)
    model.train()
    model(torch.randn(8, 6)).pow(2).sum().backward()
    assert model[0].weight_orig.grad is not None and model[0].weight_log_alpha.grad is not None
    assert torch.all(model[0].weight_orig.grad[:, 0] == 0)
    assert torch.all(model[0].weight[:, 0] == 0)
    expected = l0.expected_l0(model)
    assert expected["0.weight"][1] == 25 and expected["2.weight"][1] == 15
    assert expected["0.weight"][0].item() == pytest.approx(25 * 0.832, rel=0.01)


def test_finish_with_a_global_target_is_exact_and_follows_log_alpha():
    model = _model()
    l0.install_gates(model)
    with torch.no_grad():
        model[0].weight_log_alpha.copy_(torch.linspace(-5, 5, 30).reshape(5, 6))
        model[2].weight_log_alpha.fill_(-6.0)
        model[2].weight_log_alpha[0, :3] = 6.0
    orig = model[0].weight_orig.detach().clone()
    masks = l0.finish(model, 0.8)  # 45 weights, 9 kept: the 9 highest log_alpha
    assert sum(int(m.sum()) for m in masks.values()) == 9
    assert P.sparsity_report(model)["nonzero"] == 9
    assert int(masks["2.weight"].sum()) == 3 and masks["0.weight"].reshape(-1)[-6:].all()
    assert not l0.gated_layers(model) and set(model[0].state_dict()) == {"weight", "bias", "weight_mask"}
    assert not model[0]._forward_pre_hooks.values().__iter__().__next__().__class__ is l0.L0Gates
    # the test-time gate is folded into the kept weights
    gates = l0.deterministic_gates(torch.linspace(-5, 5, 30).reshape(5, 6))
    kept = masks["0.weight"]
    assert torch.allclose(model[0].weight[kept], (orig * gates)[kept])


def test_finish_without_target_keeps_open_gates_and_per_layer_targets_are_exact():
    model = _model()
    l0.install_gates(model)
    with torch.no_grad():
        model[0].weight_log_alpha.copy_(torch.linspace(-5, 5, 30).reshape(5, 6))
        model[2].weight_log_alpha.fill_(3.0)
    probe = copy.deepcopy(model)
    open_gates = l0.gate_masks(probe)
    assert int(open_gates["0.weight"].sum()) == int((torch.linspace(-5, 5, 30) > math.log(1 / 11)).sum())
    assert bool(open_gates["2.weight"].all())
    masks = l0.finish(model, {"0.weight": 0.5, "2.weight": 0.8})
    assert int(masks["0.weight"].sum()) == 15 and int(masks["2.weight"].sum()) == 3
    with pytest.raises(ValueError, match="no target sparsity for gated layer"):
        l0.finish(probe, {"0.weight": 0.5})


def test_prune_with_l0_without_data_is_a_clear_error_and_changes_nothing():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="learns its masks while training.*prune_and_retrain"):
        P.prune(model, P.L0(sparsity=0.9))
    with pytest.raises(ValueError, match="learns its masks"):
        P.prune(model, 0.9, "l0")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("options, message", [
    ({"sparsity": 0.9, "layer_sparsity": 0.5}, "at most one of sparsity"),
    ({"sparsity": 1.0}, r"sparsity must be in \[0.0, 1.0\)"),
    ({"penalty": -1.0}, "penalty must be in"),
    ({"droprate_init": 0.0}, r"droprate_init must be in \(0, 1\)"),
    ({"droprate_init": 1.0}, "droprate_init must be in"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"layer_sparsity": {"fc1": 1.5}}, "layer_sparsity"),
])
def test_bad_l0_configs(options, message):
    with pytest.raises(ValueError, match=message):
        P.L0(**options)


def test_l0_is_registered_and_misspelled_options_list_the_allowed():
    assert "l0" in P.method_names()
    assert deepzip.registry.METHODS.build("prune", "l0", sparsity=None).fixes_own_sparsity
    with pytest.raises(TypeError, match="takes no option 'penalt'.*penalty"):
        deepzip.registry.METHODS.build("prune", "l0", penalt=1.0)


def test_gating_twice_or_a_shared_weight_is_refused():
    model = _model()
    l0.install_gates(model)
    with pytest.raises(ValueError, match="already gated"):
        l0.install_gates(model)
    with pytest.raises(ValueError, match="cannot gate"):
        l0.install_gates(_model(), names=["1.weight"])
