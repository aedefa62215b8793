"""Sparse-training sweeps: the grid's checks, serial = forked pool = ``deepzip sparse-train``, finished runs
skipped, the CLI's table and status; then (last: no fork after Ray) as Ray tasks on the local cluster of
tests/conftest.py (a head and two one-CPU worker nodes on 127.0.0.1): the same numbers, each run started
once, a rerun starts none; and the per-step resources and retries reach Ray's task options (checked with
a stand-in for Ray: there is no GPU here, so no GPU sweep is ever run by these tests)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepzip import data, distributed
from deepzip.cli import main
from deepzip.distributed import check_picklable
from deepzip.sweep import Sweep, SweepConfig, plan, records
from deepzip.sweep.runner import Sweep as SweepClass
from deepzip.train import TrainConfig

TRAIN = TrainConfig(model="lenet300_100", dataset="digits", val_size=300, batch_size=32, epochs=1, eval_every=20)
GRID = SweepConfig(methods="static,rigl,srste", sparsities="0.8", seeds="0,1")
OPTIONS = {"update_interval": 10}
KEYS = [("static", 0.8, 0), ("static", 0.8, 1), ("rigl", 0.8, 0), ("rigl", 0.8, 1), ("srste", 0.5, 0), ("srste", 0.5, 1)]
CLI = ["sweep", "run", "--methods", "static,rigl,srste", "--sparsities", "0.8", "--seeds", "0,1", "--update-interval",
       "10", "--dataset", "digits", "--val-size", "300", "--batch-size", "32", "--epochs", "1", "--eval-every", "20",
       "--quiet"]


def numbers(found: list[dict]) -> dict:
    return {(r["method"], r["sparsity"], r["seed"]): (r["run_dir"], r["test_acc"], r["val_acc"], r["early_stop_test_acc"],
                                                      r["achieved_sparsity"], r["flops_ratio"], r["updates"])
            for r in found}


@pytest.fixture(scope="module")
def serial(digits, tmp_path_factory):
    sweep = Sweep(tmp_path_factory.mktemp("serial") / "sweep", TRAIN, GRID, digits, options=OPTIONS, progress=False)
    sweep.run()
    return sweep


# ---------------------------------------------------------------------------------------------- the grid
def test_the_grid_is_every_method_sparsity_and_seed_with_srste_once_per_seed():
    runs = plan(TRAIN, SweepConfig(methods=["set", "srste"], sparsities=[0.9, 0.95], seeds=[2, 0]), {"n": 1, "m": 4})
    assert [r.key for r in runs] == [("set", 0.9, 2), ("set", 0.9, 0), ("set", 0.95, 2), ("set", 0.95, 0),
                                     ("srste", 0.75, 2), ("srste", 0.75, 0)]
    assert [r.train.seed for r in runs] == [2, 0, 2, 0, 2, 0]
    assert runs[0].sparse.n is None and runs[-1].sparse.n == 1  # each option goes to the methods that have it
    assert SweepConfig(methods=["set", "rigl"]).methods == "set,rigl"  # lists stored as the CLI spells them


@pytest.mark.parametrize("grid, options, error, message", [
    (dict(methods="rigl,magic"), {}, ValueError, "unknown methods magic; allowed: static, set, rigl, snfs, srste"),
    (dict(methods=" , "), {}, ValueError, "methods is empty; give at least one value"),
    (dict(sparsities="0.9,1.0"), {}, ValueError, r"sparsities must be numbers in \[0, 1\) \(e.g. 0.9,0.95\), got 1.0"),
    (dict(sparsities="0.9,x"), {}, ValueError, "sparsities must be numbers in .* got x"),
    (dict(sparsities="0.9,0.90"), {}, ValueError, "sparsities lists 0.9 more than once"),
    (dict(seeds="0,-1"), {}, ValueError, r"seeds must be integers >= 0 \(e.g. 0,1,2\), got -1"),
    (dict(seeds="1,1"), {}, ValueError, "seeds lists 1 more than once"),
    (dict(seeds=3), {}, TypeError, "seeds must be a comma-separated string"),
    (dict(methods="static"), {"update_interval": 10}, ValueError,
     r"option update_interval=10 applies to none of the sweep's methods \(static\); it applies to set, rigl, snfs"),
    (dict(methods="srste", sparsities="0.8"), {}, ValueError, "sparsities='0.8' applies to none of the sweep's methods"),
    (dict(), {"sparsity": 0.5}, ValueError, r"option 'sparsity' is the grid's: give it as SweepConfig.sparsities"),
    (dict(), {"update_intervall": 5}, ValueError, "unknown sparse-training option 'update_intervall'; allowed: distrib"),
    (dict(methods="rigl"), {"drop_schedule": "linear"}, ValueError, "method rigl: drop_schedule='linear' is not allowed"),
])
def test_bad_grids_are_clear_errors(grid, options, error, message):
    with pytest.raises(error, match=message):
        plan(TRAIN, SweepConfig(**grid), options)


def test_the_seeds_come_from_the_grid_and_nothing_is_written_for_a_bad_grid(digits, tmp_path):
    with pytest.raises(ValueError, match="seeds come from SweepConfig.seeds"):
        Sweep(tmp_path / "s", TrainConfig(dataset="digits", seed=3), GRID, digits)
    with pytest.raises(ValueError, match="unknown methods"):
        Sweep(tmp_path / "s", TRAIN, SweepConfig(methods="x"), digits)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(jobs=0), ValueError, r"jobs must be >= 1 \(an int\), got 0"),
    (dict(executor="dask"), ValueError, "executor must be 'local' or 'ray', got 'dask'"),
    (dict(max_retries=-1), ValueError, "max_retries must be >= 0, got -1"),
    (dict(max_retries="3"), TypeError, "max_retries must be an int >= 0, got str '3'"),
    (dict(max_retries=True), TypeError, "max_retries must be an int >= 0, got bool True"),
])
def test_bad_run_settings_are_refused_before_any_run(digits, tmp_path, kwargs, error, message):
    sweep = Sweep(tmp_path / "s", TRAIN, GRID, digits, options=OPTIONS, progress=False)
    with pytest.raises(error, match=message):
        sweep.run(**kwargs)
    assert not any(sweep.done(k) for k in sweep.steps()) and sorted(p.name for p in sweep.dir.iterdir()) == ["config.json"]


# ----------------------------------------------------------------------------------------------- running
def test_serial_sweep_runs_every_cell_and_each_run_is_a_sparse_train_run(serial, tmp_path, capsys):
    found = records(serial.dir)
    assert [(r["method"], r["sparsity"], r["seed"]) for r in found] == KEYS
    by_key = numbers(found)
    assert all(abs(by_key[k][4] - k[1]) < 2e-3 for k in KEYS)  # each run at its sparsity (srste: 2:4 = 0.5)
    assert by_key[("rigl", 0.8, 0)][6] > 0 and by_key[("static", 0.8, 0)][6] == 0  # rigl updated its masks
    assert by_key[("rigl", 0.8, 0)][1] != by_key[("rigl", 0.8, 1)][1]  # the seeds differ
    # the same run through `deepzip sparse-train` lands in the same directory and is loaded, not retrained
    assert main(["sparse-train", "--method", "rigl", "--sparsity", "0.8", "--update-interval", "10", "--seed", "1",
                 "--dataset", "digits", "--val-size", "300", "--batch-size", "32", "--epochs", "1", "--eval-every",
                 "20", "--runs-dir", str(serial.dir), "--quiet"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert Path(single["run_dir"]).name == by_key[("rigl", 0.8, 1)][0]
    assert single["test_acc"] == by_key[("rigl", 0.8, 1)][1] and single["flops_ratio"] == by_key[("rigl", 0.8, 1)][5]


def test_forked_pool_equals_the_serial_run_and_a_rerun_skips_finished_runs(serial, digits, tmp_path, monkeypatch):
    pooled = Sweep(tmp_path / "pooled", TRAIN, GRID, digits, options=OPTIONS, progress=False)
    pooled.run(jobs=2)
    assert numbers(records(pooled.dir)) == numbers(records(serial.dir))
    for key in KEYS:  # the masks too, bit for bit
        a, b = (load_file(s.run_dir(key) / "model.safetensors") for s in (pooled, serial))
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a), key

    def refuse(self, key):
        raise AssertionError(f"finished run {key} started again")

    monkeypatch.setattr(SweepClass, "run_step", refuse)
    pooled.run()  # serial rerun: everything finished, nothing started
    pooled.run(jobs=2)


def test_a_killed_sweep_resumes_where_it_stopped(serial, digits, tmp_path, monkeypatch):
    sweep = Sweep(tmp_path / "s", TRAIN, GRID, digits, options=OPTIONS, progress=False)
    started = []
    real = SweepClass.run_step

    def stop_at_the_third(self, key):
        started.append(key)
        if len(started) == 3:
            raise KeyboardInterrupt
        return real(self, key)

    monkeypatch.setattr(SweepClass, "run_step", stop_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        sweep.run()
    assert [k for k in KEYS if sweep.done(k)] == KEYS[:2]
    started.clear()
    monkeypatch.setattr(SweepClass, "run_step", lambda self, key: (started.append(key), real(self, key))[1])
    sweep.run()
    assert started == KEYS[2:] and numbers(records(sweep.dir)) == numbers(records(serial.dir))


def test_cli_prints_the_grid_table_and_status_reads_it_back(serial, tmp_path, capsys):
    assert main([*CLI, "--runs-dir", str(tmp_path), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    directory = Path(out.splitlines()[0].split("sweep directory: ")[1].split()[0])
    assert "(6 runs)" in out and "6 finished runs of 6" in out and out.rstrip().endswith("complete")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["static"], ["rigl"], ["srste"])}
    assert set(rows) == {"static", "rigl", "srste"} and rows["srste"][1] == "0.5" and rows["rigl"][2] == "2/2"
    accs = [r["test_acc"] for r in records(serial.dir) if r["method"] == "rigl"]
    assert rows["rigl"][3] == f"{sum(accs) / 2:.4f}"  # the mean over the seeds
    assert numbers(records(directory)) == numbers(records(serial.dir))  # the CLI ran the same runs
    (directory / records(directory)[0]["run_dir"] / "sparse.json").unlink()  # as if the first run was killed
    assert main(["sweep", "status", str(directory)]) == 0
    status = capsys.readouterr().out
    assert "5 finished runs of 6" in status and "static  0.8       1/2" in status
    assert "next: static at sparsity 0.8, seed 0 (1 run(s) to go)" in status


def test_sweep_status_of_a_directory_that_is_not_a_sweep_is_a_one_line_error(tmp_path, capsys):
    assert main(["sweep", "status", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"deepzip sweep: error: DIRECTORY: {tmp_path} is not a sweep directory "
                                               f"(no config.json); give the directory 'deepzip sweep run' printed")


# --------------------------------------------------------------------------------------- what Ray pickles
class LockedDigits(torch.utils.data.Dataset):
    """A custom data set holding a lock: fine in this process, cannot be sent to a Ray worker."""

    def __init__(self, split):
        self.split, self.lock = split, threading.Lock()

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        x, y = self.split.batch([i])
        return x[0], y[0]


def test_an_unpicklable_data_set_is_named_before_any_ray_work(digits, tmp_path):
    pytest.importorskip("ray")
    custom = data.from_datasets(LockedDigits(digits.train), digits.val, digits.test, name="locked")
    sweep = Sweep(tmp_path / "s", TRAIN, SweepConfig(methods="static", seeds="0"), custom, progress=False)
    with pytest.raises(TypeError, match=r"the train data set 'locked' \(.*LockedDigits.*\) cannot be pickled, and with "
                                        r"--executor ray it must be sent to every worker: TypeError: cannot pickle "
                                        r"'_thread.lock' object. Define it at module level"):
        sweep.run(executor="ray", ray_address="127.0.0.1:1")  # no cluster there: refused before connecting
    assert not any(sweep.done(k) for k in sweep.steps())
    sweep.run(jobs=1)  # locally nothing is pickled: the same sweep runs
    assert sweep.done(("static", 0.9, 0))


def test_check_picklable_skips_none_and_passes_module_level_objects():
    check_picklable({"train_fn": None, "fn": json.dumps, "lambda": lambda x: x})  # cloudpickle takes lambdas
    with pytest.raises(TypeError, match=r"^lock \(<unlocked _thread.lock object .*\) cannot be pickled"):
        check_picklable({"lock": threading.Lock()})


# ------------------------------------------------------------------------------------ on Ray (keep last)
def test_ray_sweep_equals_the_serial_run_and_a_rerun_starts_nothing(cluster, serial, tmp_path, capsys):
    command = [*CLI, "--runs-dir", str(tmp_path), "--executor", "ray", "--ray-address", cluster.address,
               "--max-retries", "1"]
    assert main(command) == 0
    out = capsys.readouterr().out
    directory = Path(out.splitlines()[0].split("sweep directory: ")[1].split()[0])
    assert "6 finished runs of 6" in out and "complete" in out
    assert numbers(records(directory)) == numbers(records(serial.dir))
    markers = [json.loads(m.read_text()) for m in directory.glob("ray_log/starts/*.json")]
    assert sorted(tuple(m["step"]) for m in markers) == sorted(KEYS)  # each run started exactly once
    assert all(m["seconds"] > 0 for m in markers) and len({m["node"] for m in markers}) == 2  # on both workers
    assert main(command) == 0  # the rerun: everything finished, no task starts
    assert len(list(directory.glob("ray_log/starts/*.json"))) == 6


class Stop(Exception):
    pass


class FakeRay:
    """Ray as far as run_on_ray uses it before the first task: records the task options, then stops."""

    def __init__(self):
        self.options = None

    def is_initialized(self):
        return True  # "connected": nothing started

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}]

    def put(self, obj):
        return obj

    def remote(self, function):
        fake = self

        class Task:
            def options(self, **options):
                fake.options = options
                return self

            def remote(self, *args):
                raise Stop

        return Task()


def test_gpus_cpus_and_retries_reach_the_ray_task_options(digits, tmp_path, monkeypatch):
    fake = FakeRay()
    monkeypatch.setattr(distributed, "_ray", lambda: fake)
    with pytest.raises(Stop):
        main([*CLI, "--runs-dir", str(tmp_path), "--executor", "ray", "--gpus-per-step", "1", "--cpus-per-step", "2",
              "--max-retries", "5", "--device", "cuda"])
    assert fake.options == {"num_cpus": 2.0, "num_gpus": 1.0, "max_retries": 5, "retry_exceptions": False}
    config = json.loads(next(tmp_path.glob("sweep_*/config.json")).read_text())
    assert config["train"]["device"] == "cuda"  # the workers train on the GPU each task is given
    sweep = Sweep(tmp_path / "api", TRAIN, GRID, digits, options=OPTIONS, progress=False)
    with pytest.raises(Stop):
        sweep.run(executor="ray", gpus_per_step=0.5)
    assert fake.options == {"num_cpus": 1, "num_gpus": 0.5, "max_retries": 3, "retry_exceptions": False}  # defaults
