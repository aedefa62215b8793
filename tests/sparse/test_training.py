"""Each sparse-training method's invariants with real numbers, determinism, and exact resumption."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepzip import models
from deepzip import prune as P
from deepzip.sparse import SET, SNFS, SRSTE, RigL, SparseTraining, Static
from deepzip.train import TrainConfig, train

from ..conftest import Crash, crash_at

CFG = TrainConfig(model="lenet300_100", dataset="digits", batch_size=32, epochs=3, val_size=300, eval_every=20,
                  lr_schedule="cosine")
METHODS = {"static": Static(sparsity=0.9), "set": SET(sparsity=0.9, update_interval=10),
           "rigl": RigL(sparsity=0.9, update_interval=10), "snfs": SNFS(sparsity=0.9, update_interval=10),
           "srste": SRSTE()}


def fresh(seed=0):
    return models.build("lenet300_100", input_shape=(1, 8, 8), seed=seed)


def user_loop(model, data, method, steps=60, optimizer="adam", check=None):
    """A plain PyTorch loop: ``sparse.step()`` instead of ``optimizer.step()``."""
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sparse = SparseTraining(model, opt, method, total_steps=steps)
    for step in range(steps):
        idx = torch.arange(step * 32, step * 32 + 32) % len(data.train)
        opt.zero_grad()
        F.cross_entropy(model(data.train.x[idx]), data.train.y[idx]).backward()
        sparse.step()
        if check is not None:
            check(sparse, opt)
    return sparse


@pytest.mark.parametrize("name", ["static", "set", "rigl", "snfs"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_sparsity_kept_and_inactive_weights_and_state_exactly_zero(digits, name, optimizer):
    model = fresh()
    counts = {}

    def check(sparse, opt):
        masks = sparse.masks()
        if not counts:
            counts.update({n: int(m.sum()) for n, m in masks.items()})
        if name == "snfs":  # redistribution moves weights between layers; the total is kept
            assert sum(int(m.sum()) for m in masks.values()) == sum(counts.values())
        else:
            assert {n: int(m.sum()) for n, m in masks.items()} == counts
        for n, w in sparse.weights().items():
            off = w.detach()[~masks[n]]
            assert torch.equal(off, torch.zeros_like(off)) and not torch.signbit(off).any()  # +0.0 exactly
            for value in opt.state[w].values():
                if value.shape == w.shape:
                    assert not value[~masks[n]].any()

    sparse = user_loop(model, digits, METHODS[name], optimizer=optimizer, check=check)
    assert sum(counts.values()) == 5020  # 10% of the 64x300 + 300x100 + 100x10 = 50,200 weights (8x8 input)
    expected_updates = {"static": 0, "set": 5, "rigl": 4, "snfs": 5}[name]  # every 10 steps before the end
    assert len(sparse.updates) == expected_updates
    if name == "rigl":  # cosine from 0.3, stop at 75% of 60 steps = 45
        # alpha_t = 0.15 (1 + cos(pi t / 45)) at t = 10, 20, 30, 40
        assert [round(u["drop_fraction"], 4) for u in sparse.updates] == [0.2649, 0.176, 0.075, 0.009]


def test_rigl_regrows_where_the_dense_gradient_is_largest_and_at_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights unchanged by the step: only the update acts
    sparse = SparseTraining(model, opt, RigL(sparsity=0.5, distribution="uniform", update_interval=1,
                                             drop_fraction=0.5, drop_schedule="constant", end_fraction=1.0),
                            total_steps=10)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, 0.1, 0.0, 0.0], [0.4, 0.2, 0.0, 0.0]]))
    P.apply_masks(model, {"0.weight": torch.tensor([[True, True, False, False], [True, True, False, False]])})
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    (model(x) * torch.tensor([[1.0, 10.0]])).sum().backward()   # dense dL/dW = [[1, 2, 3, 4], [10, 20, 30, 40]]
    assert model[0].weight.grad.tolist() == [[1.0, 2.0, 0.0, 0.0], [10.0, 20.0, 0.0, 0.0]]  # masked for the optimizer
    sparse.step()
    # dropped: the 2 smallest magnitudes (0.1, 0.2); grown: the 2 inactive positions of largest |grad| (40, 30)
    assert P.get_masks(model)["0.weight"].tolist() == [[True, False, False, False], [True, False, True, True]]
    assert torch.equal(model[0].weight, torch.tensor([[0.5, 0.0, 0.0, 0.0], [0.4, 0.0, 0.0, 0.0]]))  # regrown start at 0
    assert sparse.updates == [{"step": 1, "drop_fraction": 0.5, "dropped": 2, "grown": 2}]
    # next backward (step 2 is an update too) captures again; after the last update step it does not
    assert sparse._needs_dense(2) and not sparse._needs_dense(10)


def test_a_weight_dropped_and_regrown_at_once_keeps_its_value():
    # RigL's reference (reinit_when_same=False): only connections inactive before the update start at zero
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sparse = SparseTraining(model, opt, RigL(sparsity=0.5, distribution="uniform", update_interval=1,
                                             drop_fraction=0.5, drop_schedule="constant", end_fraction=1.0),
                            total_steps=10)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, 0.1, 0.0, 0.0], [0.4, 0.2, 0.0, 0.0]]))
    P.apply_masks(model, {"0.weight": torch.tensor([[True, True, False, False], [True, True, False, False]])})
    model(torch.tensor([[1.0, 100.0, 3.0, 4.0]])).sum().backward()  # the dropped positions have the largest |grad|
    sparse.step()
    assert P.get_masks(model)["0.weight"].tolist() == [[True, True, False, False], [True, True, False, False]]
    assert torch.equal(model[0].weight, torch.tensor([[0.5, 0.1, 0.0, 0.0], [0.4, 0.2, 0.0, 0.0]]))


def test_dense_gradient_capture_switch():
    model = nn.Sequential(nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0, 2.0]]))
    P.apply_masks(model, {"0.weight": torch.tensor([[True, False, True]])})
    x = torch.tensor([[1.0, 2.0, 3.0]])
    P.capture_dense_gradients(model)
    model(x).sum().backward()
    model(x).sum().backward()  # summed over backwards, like .grad
    assert P.captured_gradients(model)["0.weight"].tolist() == [[2.0, 4.0, 6.0]]
    assert model[0].weight.grad.tolist() == [[2.0, 0.0, 6.0]]
    P.capture_dense_gradients(model, False)
    model(x).sum().backward()
    assert P.captured_gradients(model) == {}


def test_snfs_redistributes_regrowth_by_mean_momentum():
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sparse = SparseTraining(model, opt, SNFS(sparsity=0.5, update_interval=1, drop_fraction=0.2,
                                             drop_schedule="constant"), total_steps=10)
    masks = sparse.masks()
    assert [int(m.sum()) for m in masks.values()] == [50, 50]
    # layer 0's momentum is 3x layer 1's over the active weights: of the 20 dropped, 15 regrow there
    sparse.rule.momentum = {"0.weight": torch.full((10, 10), 3.0), "1.weight": torch.full((10, 10), 1.0)}
    record = sparse.update(1)
    assert record == {"step": 1, "drop_fraction": 0.2, "dropped": 20, "grown": 20}
    assert [int(m.sum()) for m in sparse.masks().values()] == [55, 45]
    none = SparseTraining(nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False)), opt,
                          SNFS(sparsity=0.5, update_interval=1, drop_fraction=0.2, drop_schedule="constant",
                               redistribution="none"), total_steps=10)
    none.rule.momentum = dict(sparse.rule.momentum)
    none.update(1)
    assert [int(m.sum()) for m in none.masks().values()] == [50, 50]


@pytest.mark.parametrize("name", ["set", "rigl", "snfs", "srste"])
def test_same_seed_same_masks_and_weights(digits, name):
    a, b = fresh(), fresh()
    sa, sb = user_loop(a, digits, METHODS[name]), user_loop(b, digits, METHODS[name])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert all(torch.equal(sa.masks()[n], sb.masks()[n]) for n in sa.masks())
    other = user_loop(fresh(), digits, type(METHODS[name])(**{**METHODS[name].__dict__, "seed": 1}))
    if name != "srste":  # a different mask seed gives a different topology (SR-STE's masks follow the weights)
        assert not torch.equal(other.masks()["fc1.weight"], sa.masks()["fc1.weight"])


@pytest.mark.parametrize("name", ["set", "rigl", "snfs", "srste"])
def test_resume_after_kill_equals_uninterrupted(digits, tmp_path, name):
    method = METHODS[name]

    def run(run_dir=None, hooks=(), resume=False):
        model = fresh()
        made = []

        def step_with(optimizer, total):
            made.append(SparseTraining(model, optimizer, method, total))
            return made[-1]

        train(model, digits, CFG, run_dir=run_dir, hooks=hooks, resume=resume, progress=False, step_with=step_with)
        return model, made[-1]

    reference, ref_sparse = run()
    with pytest.raises(Crash):  # killed after the checkpoint at 60, with updates at 10..60 done
        run(tmp_path, hooks=[crash_at(75)])
    assert [json.loads(l)["iteration"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [20, 40, 60]
    resumed, sparse = run(tmp_path, resume=True)
    assert all(torch.equal(x, y) for x, y in zip(reference.state_dict().values(), resumed.state_dict().values()))
    assert sparse.updates == ref_sparse.updates and sparse.train_flops == ref_sparse.train_flops
    assert sparse.step_count == ref_sparse.step_count == 3 * 38
