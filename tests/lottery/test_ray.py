"""Lottery sweeps as Ray tasks on a local cluster (a head and two one-CPU worker nodes on 127.0.0.1).

The same numbers as a serial run; a worker node lost mid-sweep costs nothing finished; a driver killed
with SIGKILL resumes on rerun. Every test but the first needs Ray (the ``ray`` extra) and is skipped
without it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepzip.cli import main
from deepzip.distributed import run_on_ray
from deepzip.lottery import Experiment, LotteryConfig
from deepzip.lottery.parallel import dependency, priority
from deepzip.train import TrainConfig

ARGS = ["lottery", "run", "--dataset", "digits", "--train-val-size", "300", "--train-batch-size", "32",
        "--train-epochs", "1", "--train-eval-every", "10", "--levels", "2", "--quiet"]
STEPS_PER_REPLICATE = 7  # dense + 2 levels x (imp, reinit, random)
TRAIN = TrainConfig(model="lenet300_100", dataset="digits", val_size=300, batch_size=32, epochs=1, eval_every=10)


def results(directory: Path) -> dict:
    """{step directory: (summary, metrics without wall times)} of every finished step."""
    out = {}
    for summary in directory.glob("lottery_*/replicate_*/level_*/**/summary.json"):
        metrics = [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
                   for line in (summary.parent / "metrics.jsonl").read_text().splitlines()]
        out[str(summary.parent.relative_to(next(directory.glob("lottery_*"))))] = (json.loads(summary.read_text()), metrics)
    return out


def starts(directory: Path) -> dict[str, int]:
    """How many times each step was started (the executor's start markers), by step directory."""
    counts: dict[str, int] = {}
    for marker in directory.glob("lottery_*/ray_log/starts/*.json"):
        replicate, level, variant = marker.name.split(".")[0].split("_")
        key = f"replicate_{replicate}/level_{level}" + ("" if variant == "dense" else f"/{variant}")
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_executor_ray_without_ray_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # find_spec('ray') -> None: as if not installed
    assert main([*ARGS, "--replicates", "1", "--runs-dir", str(tmp_path), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'deepzip[ray]'" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # refused before any work


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The serial local run of two replicates: the reference every Ray run must equal."""
    directory = tmp_path_factory.mktemp("serial")
    assert main([*ARGS, "--replicates", "2", "--runs-dir", str(directory)]) == 0
    found = results(directory)
    assert len(found) == 2 * STEPS_PER_REPLICATE
    return found


def test_ray_sweep_equals_the_serial_run(cluster, serial, tmp_path, capsys):
    assert main([*ARGS, "--replicates", "2", "--runs-dir", str(tmp_path), "--executor", "ray",
                 "--ray-address", cluster.address, "--cpus-per-step", "1"]) == 0
    out = capsys.readouterr().out
    assert "14 finished steps of 14" in out and "complete" in out
    assert results(tmp_path) == serial
    assert set(starts(tmp_path).values()) == {1} and len(starts(tmp_path)) == 14  # each step ran exactly once
    # a rerun finds everything finished: no task starts
    assert main([*ARGS, "--replicates", "2", "--runs-dir", str(tmp_path), "--executor", "ray",
                 "--ray-address", cluster.address]) == 0
    assert len(starts(tmp_path)) == 14 and set(starts(tmp_path).values()) == {1}


def test_a_step_no_node_can_hold_is_an_error_not_a_hang(cluster, digits, tmp_path):
    experiment = Experiment(tmp_path / "lottery_gpu", TRAIN, LotteryConfig(levels=1, replicates=1), digits,
                            progress=False)
    with pytest.raises(RuntimeError, match="no node of the Ray cluster has 1 CPU and 1 GPU"):
        experiment.run(executor="ray", gpus_per_step=1)
    assert not any(experiment.done(*s) for s in experiment.steps())


def test_a_failing_step_is_named_and_its_dependents_do_not_run(cluster, tmp_path):
    def run_step(step):  # a local function: pickled by value for the workers
        if step == "a":
            raise ValueError("boom in a")
        (tmp_path / step).write_text("ran")

    with pytest.raises(RuntimeError, match=r"(?s)failed on a Ray worker.*boom in a"):
        run_on_ray(["a", "b", "c"], run_step, lambda s: "a" if s == "b" else None, lambda s: False)
    assert not (tmp_path / "b").exists()  # b builds on a: never started


def test_a_worker_node_lost_mid_sweep_loses_and_recomputes_nothing_finished(cluster, serial, digits, tmp_path):
    experiment = Experiment(tmp_path / "lottery_lost", TRAIN, LotteryConfig(levels=2, replicates=2), digits,
                            progress=False)
    steps = list(experiment.steps())
    victim_node = cluster.workers[1].node_id
    completed, finished_at_loss, in_flight = [], [], []

    def key(step):
        return str(experiment.step_dir(*step).relative_to(experiment.dir))

    def running_on_victim():
        for marker in (experiment.dir / "ray_log" / "starts").glob("*.json"):
            record = json.loads(marker.read_text())
            if record["node"] == victim_node and not experiment.done(*record["step"]):
                return tuple(record["step"])
        return None

    def on_done(step):
        completed.append(step)
        if len(completed) == 2:  # mid-sweep: wait until the victim node is inside a step, then lose it
            deadline = time.monotonic() + 20
            while running_on_victim() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            victim = running_on_victim()
            finished_at_loss.extend(key(s) for s in steps if experiment.done(*s))
            cluster.remove_node(cluster.workers[1])
            if victim is not None and not experiment.done(*victim):
                in_flight.append(key(victim))

    try:
        run_on_ray(steps, experiment._run_step_tuple, dependency, experiment._done_tuple, num_cpus=1,
                   log_dir=experiment.dir / "ray_log", on_done=on_done, priority=priority)
    finally:
        cluster.workers[1] = cluster.add_node(num_cpus=1, object_store_memory=cluster.store)  # for the next test
        cluster.wait_for_nodes()
    assert sorted(completed) == sorted(steps)  # every step reported once
    assert results(tmp_path) == serial
    counts = starts(tmp_path)
    assert len(finished_at_loss) >= 2 and all(counts[k] == 1 for k in finished_at_loss)
    assert in_flight, "no step was running on the lost node"
    # the step that was running on the lost node is the only one started twice (its retry)
    assert {k: n for k, n in counts.items() if n != 1} == {in_flight[0]: 2} and len(counts) == 14


def test_a_driver_killed_with_sigkill_resumes_on_rerun(cluster, serial, tmp_path):
    command = [*ARGS, "--replicates", "1", "--runs-dir", str(tmp_path), "--executor", "ray",
               "--ray-address", cluster.address]
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "deepzip", *command], stdout=out, stderr=out)
    deadline = time.monotonic() + 300  # generous: the steps are seconds each, but CI machines may be loaded
    while len(list(tmp_path.glob("lottery_*/replicate_*/level_*/**/summary.json"))) < 2:
        assert driver.poll() is None, f"the driver ended (exit {driver.poll()}) before it was killed: " \
                                      f"{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no two steps finished within 300 s: {log.read_text()[-2000:]}"
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = set(results(tmp_path))
    assert 2 <= len(finished) < STEPS_PER_REPLICATE  # killed mid-sweep
    assert main(command) == 0  # the rerun
    assert results(tmp_path) == {k: v for k, v in serial.items() if k.startswith("replicate_0/")}
    counts = starts(tmp_path)
    assert all(counts[key] == 1 for key in finished)  # nothing finished before the kill ran again


def test_a_worker_that_cannot_see_the_experiment_directory_names_the_requirement(digits, tmp_path):
    experiment = Experiment(tmp_path / "exp", TRAIN, LotteryConfig(levels=1, replicates=1), digits, progress=False)
    (experiment.dir / "config.json").unlink()  # as on a node that does not mount the runs directory
    with pytest.raises(RuntimeError, match="must be on a file system every node mounts"):
        experiment._run_step_tuple((0, 0, "dense"))
    assert not experiment.step_dir(0, 0, "dense").exists()


def test_an_unpicklable_train_fn_is_named_before_any_work(digits, tmp_path):
    pytest.importorskip("ray")
    import threading

    lock = threading.Lock()

    def train_fn(model, run_dir):  # holds a lock: cannot be sent to a Ray worker
        with lock:
            pass

    experiment = Experiment(tmp_path / "exp", TRAIN, LotteryConfig(levels=1, replicates=1), digits, progress=False,
                            train_fn=train_fn)
    with pytest.raises(TypeError, match=r"^train_fn \(<function .*train_fn.*\) cannot be pickled, and with --executor "
                                        r"ray it must be sent to every worker: TypeError: cannot pickle '_thread.lock' "
                                        r"object. Define it at module level"):
        experiment.run(executor="ray", ray_address="127.0.0.1:1")  # refused before connecting anywhere
    assert not any(experiment.done(*s) for s in experiment.steps()) and not (experiment.dir / "replicate_0").exists()


@pytest.mark.parametrize("value, error, message", [
    (-1, ValueError, "max_retries must be >= 0, got -1"), (2.5, TypeError, "max_retries must be an int >= 0, got float"),
    (None, TypeError, "max_retries must be an int >= 0, got NoneType")])
def test_max_retries_is_checked_before_any_work(digits, tmp_path, value, error, message):
    experiment = Experiment(tmp_path / "exp", TRAIN, LotteryConfig(levels=1, replicates=1), digits, progress=False)
    with pytest.raises(error, match=message):
        experiment.run(executor="ray", max_retries=value)
    assert not (experiment.dir / "replicate_0").exists()


def test_max_retries_and_resources_reach_the_ray_task_options(digits, tmp_path, monkeypatch):
    import deepzip.distributed as distributed

    captured = {}

    class Stop(Exception):
        pass

    class Task:
        def options(self, **options):
            captured.update(options)
            return self

        def remote(self, *args):
            raise Stop

    class FakeRay:  # Ray as far as run_on_ray goes before its first task
        is_initialized = staticmethod(lambda: True)
        nodes = staticmethod(lambda: [{"Alive": True, "Resources": {"CPU": 4.0, "GPU": 2.0}}])
        put = staticmethod(lambda obj: obj)
        remote = staticmethod(lambda function: Task())

    monkeypatch.setattr(distributed, "_ray", FakeRay)
    experiment = Experiment(tmp_path / "exp", TRAIN, LotteryConfig(levels=1, replicates=1), digits, progress=False)
    with pytest.raises(Stop):
        experiment.run(executor="ray", cpus_per_step=2, gpus_per_step=1, max_retries=7)
    assert captured == {"num_cpus": 2, "num_gpus": 1, "max_retries": 7, "retry_exceptions": False}
