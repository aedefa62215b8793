import json

import pytest
import torch

from deepzip import models
from deepzip import prune as P
from deepzip.checkpoint import load_model_file
from deepzip.lottery import (Experiment, LotteryConfig, aggregate, level_masks, level_sparsities, plot_experiment,
                             random_masks, status, steps)
from deepzip.train import TrainConfig, train

TRAIN = TrainConfig(dataset="digits", val_size=300, batch_size=32, epochs=2, eval_every=10)  # 38 iterations/epoch


def test_paper_rates_per_level():
    model = models.build("lenet300_100", seed=0)
    s = level_sparsities(model, LotteryConfig(), 3)
    assert s["fc1.weight"] == pytest.approx(1 - 0.8 ** 3) and s["fc2.weight"] == pytest.approx(1 - 0.8 ** 3)
    assert s["fc3.weight"] == pytest.approx(1 - 0.9 ** 3)  # output layer at half rate
    conv = level_sparsities(models.build("conv2", seed=0), LotteryConfig(), 2)
    assert conv["features.0.weight"] == pytest.approx(1 - 0.9 ** 2)


def test_level_masks_shrink_monotonically_and_random_matches_counts():
    model = models.build("lenet300_100", seed=0)
    first = level_masks(model, LotteryConfig(), 1)
    P.apply_masks(model, first)
    second = level_masks(model, LotteryConfig(), 2)
    for name in first:
        assert not (second[name] & ~first[name]).any()
    assert int(second["fc1.weight"].sum()) == round(235200 * 0.64)
    rand = random_masks(second, seed=3)
    assert all(int(rand[n].sum()) == int(second[n].sum()) and not torch.equal(rand[n], second[n]) for n in second)
    glob = level_masks(models.build("lenet300_100", seed=0), LotteryConfig(pruning="global"), 2)
    kept = sum(int(m.sum()) for m in glob.values()) / sum(m.numel() for m in glob.values())
    assert kept == pytest.approx(0.64, abs=1e-4)


def test_start_iteration_continues_the_schedule(digits):
    model = models.build("lenet300_100", (1, 8, 8), seed=0)
    cfg = TrainConfig(dataset="digits", val_size=300, batch_size=32, epochs=2, lr_schedule="cosine", eval_every=10)
    result = train(model, digits, cfg, start_iteration=50, progress=False)
    assert result.metrics[0]["iteration"] == 60 and result.final["iteration"] == 76
    with pytest.raises(ValueError, match=r"start_iteration must be in \[0, 76\)"):
        train(model, digits, cfg, start_iteration=76, progress=False)


@pytest.fixture(scope="module")
def experiment(digits, tmp_path_factory):
    directory = tmp_path_factory.mktemp("lottery")
    exp = Experiment(directory, TRAIN, LotteryConfig(levels=2, replicates=2, reset="rewind", rewind_iteration=20,
                                                     oneshot=True), digits, progress=False)
    exp.run()
    return exp


def test_experiment_runs_every_step(experiment):
    records = steps(experiment.dir)
    assert len(records) == 2 * (1 + 2 * 4)
    agg = aggregate(records)
    assert [round(r["remaining"], 1) for r in agg["imp"]] == [80.2, 64.3]
    assert agg["imp"][0]["replicates"] == 2 and "min" in agg["imp"][0]["test_acc"]
    assert "complete" in status(experiment.dir, list(experiment.steps()))


def test_rewind_point_and_resets(experiment, digits):
    dense_dir = experiment.step_dir(0, 0, "dense")
    init, _ = load_model_file(dense_dir / "init.safetensors")
    rewind, _ = load_model_file(dense_dir / "rewind.safetensors")
    fresh = models.build("lenet300_100", (1, 8, 8), seed=0)
    assert torch.equal(init["fc1.weight"], fresh.fc1.weight)
    # the rewind point is the level-0 weights after exactly 20 iterations of the same run
    replay = models.build("lenet300_100", (1, 8, 8), seed=0)
    import dataclasses

    class Stop(Exception):
        pass

    def stop(model, optimizer, it):
        if it == 20:
            raise Stop

    with pytest.raises(Stop):
        train(replay, digits, dataclasses.replace(TRAIN, seed=0), hooks=[stop], progress=False)
    assert torch.equal(rewind["fc1.weight"], replay.fc1.weight)
    model, start, cfg = experiment._reset(0, 1, "imp", 0)
    assert start == 20 and cfg is None and torch.equal(model.fc1.weight, rewind["fc1.weight"])
    reinit, start, _ = experiment._reset(0, 1, "reinit", 0)
    assert start == 0 and not torch.equal(reinit.fc1.weight, fresh.fc1.weight)
    # the winning ticket keeps its mask through training: pruned weights are exactly zero
    trained = experiment.trained(0, 2, "imp")
    mask = P.get_masks(trained)["fc1.weight"]
    assert (trained.fc1.weight[~mask] == 0).all() and mask.float().mean() == pytest.approx(0.64, abs=1e-3)


def test_rerun_is_a_no_op_and_a_killed_step_resumes(experiment, digits, monkeypatch):
    def metrics():  # everything but the wall time
        lines = (experiment.step_dir(1, 2, "random") / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"} for line in lines]

    metrics_before = metrics()
    (experiment.step_dir(1, 2, "random") / "summary.json").unlink()  # as if killed at the very end
    again = Experiment(experiment.dir, TRAIN, experiment.cfg, digits, progress=False)
    calls = []
    original = again.run_step
    monkeypatch.setattr(again, "run_step", lambda *a: calls.append(a) or original(*a))
    again.run()
    assert calls == [(1, 2, "random")]
    assert metrics() == metrics_before  # deterministic: the redone step matches the lost one


def test_plots_are_written(experiment):
    paths = plot_experiment(experiment.dir)
    names = {p.name for p in paths}
    assert {"accuracy_vs_remaining.png", "accuracy_vs_remaining.svg", "early_stop_vs_remaining.png",
            "oneshot_vs_iterative.png", "accuracy_over_training.png"} <= names
    assert all(p.stat().st_size > 1000 for p in paths)


def test_bad_configs():
    with pytest.raises(ValueError, match="unknown controls magic"):
        LotteryConfig(controls="reinit,magic")
    with pytest.raises(ValueError, match="fc_rate must be in"):
        LotteryConfig(fc_rate=1.0)
    with pytest.raises(ValueError, match="use reset 'rewind'"):
        LotteryConfig(rewind_iteration=5)


def test_dependencies_follow_the_winning_ticket_chain():
    from deepzip.lottery.parallel import dependency

    assert dependency((1, 0, "dense")) is None
    assert dependency((1, 1, "random")) == (1, 0, "dense") and dependency((1, 3, "oneshot")) == (1, 0, "dense")
    assert dependency((1, 3, "reinit")) == (1, 2, "imp") and dependency((1, 3, "imp")) == (1, 2, "imp")


def test_parallel_run_equals_the_serial_run(experiment, digits, tmp_path):
    parallel = Experiment(tmp_path / "parallel", TRAIN, experiment.cfg, digits, progress=False)
    parallel.run(jobs=2)
    serial = {(r["replicate"], r["level"], r["variant"]): r for r in steps(experiment.dir)}
    found = {(r["replicate"], r["level"], r["variant"]): r for r in steps(parallel.dir)}
    assert found.keys() == serial.keys() and len(found) == 18
    for key, record in serial.items():  # same masks, same seeds, same batches: the same numbers
        assert found[key]["test_acc"] == record["test_acc"], key
        assert found[key]["early_stop_iteration"] == record["early_stop_iteration"], key
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        parallel.run(jobs=0)


def test_a_user_train_fn_replaces_the_loop_and_steps_resume(digits, tmp_path):
    from deepzip.lottery import Experiment, LotteryConfig
    from deepzip.train import TrainConfig

    calls = []

    def my_training(model, run_dir):  # a user's own loop: plain SGD over the digits
        calls.append(run_dir.name)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(30):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(digits.train.x), digits.train.y).backward()
            optimizer.step()

    cfg = TrainConfig(model="lenet300_100", dataset="digits", epochs=1, val_size=300)
    lottery_cfg = LotteryConfig(levels=2, replicates=1, controls="")
    experiment = Experiment(tmp_path / "exp", cfg, lottery_cfg, digits, progress=False, train_fn=my_training)
    experiment.run()
    assert calls == ["level_0", "imp", "imp"] and all(experiment.done(*s) for s in experiment.steps())
    ticket = experiment.trained(0, 2)
    from deepzip import prune as P

    assert P.sparsity_report(ticket)["sparsity"] > 0.3
    Experiment(tmp_path / "exp", cfg, lottery_cfg, digits, progress=False, train_fn=my_training).run()
    assert len(calls) == 3  # every step was finished: nothing trained again
    with pytest.raises(ValueError, match="supports reset='init' only"):
        Experiment(tmp_path / "x", cfg, LotteryConfig(reset="rewind", rewind_iteration=1), digits, train_fn=my_training)
