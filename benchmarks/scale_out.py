"""Scale-out of a lottery sweep and a sparse-training sweep (issue 20): Ray with 1 and 2 worker nodes vs
the local process pool.

    python benchmarks/scale_out.py            # ~5 min on 2 cores; writes results/scale_out.{json,md}
    python benchmarks/scale_out.py --quick    # a tiny sweep, for the tests; prints, writes RUNS/scale_out_quick.json

The same sweep (LeNet-300-100 on digits, replicates x levels x {imp, reinit, random}) runs four ways,
one after the other in this one process, each into a fresh directory: the local executor with --jobs 1
and --jobs 2, then a local Ray cluster (a head with no CPUs + one-CPU worker nodes on 127.0.0.1) with 1
worker node and with 2. Wall times are given as ratios to --jobs 1. Every run must give the same
numbers (checked). The Ray 1-worker run's start markers give each step's time; from them and the
dependency structure (``lottery.parallel.dependency``) the sweep's wall time on N machines is
estimated by list-scheduling the DAG (chain first, as both executors do); the critical path (dense ->
imp level 1 -> ... -> the last level) bounds it from below whatever N is.

The sparse-training sweep (``deepzip.sweep``: methods x sparsities x seeds on digits, every run
independent) runs the same four ways in the same rounds, beside the lottery sweep; its runs have no
dependencies, so on N machines its wall time is bounded by max(longest run, total / N).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (sys.path)
import torch

from _common import ROOT, RUNS, machine, table, write_results
from deepzip import data
from deepzip.lottery import Experiment, LotteryConfig, steps
from deepzip.lottery.parallel import dependency, priority
from deepzip.sweep import Sweep, SweepConfig, records
from deepzip.train import TrainConfig

FULL = (TrainConfig(model="lenet300_100", dataset="digits", val_size=300, batch_size=32, epochs=10, eval_every=38),
        LotteryConfig(levels=4, replicates=2))
QUICK = (TrainConfig(model="lenet300_100", dataset="digits", val_size=300, batch_size=32, epochs=1, eval_every=20),
         LotteryConfig(levels=2, replicates=1, controls="reinit"))
SWEEP_FULL = (TrainConfig(model="lenet300_100", dataset="digits", val_size=300, batch_size=32, epochs=10,
                          eval_every=38), SweepConfig(methods="static,set,rigl", sparsities="0.9,0.95", seeds="0,1"))
SWEEP_QUICK = (TrainConfig(model="lenet300_100", dataset="digits", val_size=300, batch_size=32, epochs=1,
                           eval_every=20), SweepConfig(methods="static,rigl", sparsities="0.9", seeds="0"))
SWEEP_OPTIONS = {"update_interval": 20}
PAPER_STEP_S = 55.0  # results/lottery.md: one LeNet-300-100 Fashion-MNIST run (15 epochs) on one core here
STORE = 80 * 2**20


def numbers(directory: Path) -> dict:
    return {(r["replicate"], r["level"], r["variant"]): (r["test_acc"], r["early_stop_iteration"])
            for r in steps(directory)}


def sweep_numbers(directory: Path) -> dict:
    return {(r["method"], r["sparsity"], r["seed"]): (r["test_acc"], r["achieved_sparsity"], r["flops_ratio"])
            for r in records(directory)}


def simulate_independent(durations: dict, n: int) -> float:
    """Wall time of independent runs on ``n`` workers, each run to the first free worker, in order."""
    free = [0.0] * n
    for step in durations:
        worker = min(range(n), key=free.__getitem__)
        free[worker] += durations[step]
    return max(free)


def simulate(durations: dict, n: int, overhead: float = 0.0) -> float:
    """Wall time of the DAG on ``n`` workers, list-scheduled in priority order (each step starts as soon
    as its dependency is done and a worker is free)."""
    order = sorted(durations, key=priority)
    finish: dict = {}
    free = [0.0] * n
    pending = list(order)
    while pending:
        # the first step (by priority) whose dependency has finished; start it on the earliest free worker
        ready = [s for s in pending if dependency(s) is None or dependency(s) in finish]
        worker = min(range(n), key=free.__getitem__)
        step = min(ready, key=lambda s: (max(free[worker], finish.get(dependency(s), 0.0)), priority(s)))
        start = max(free[worker], finish.get(dependency(step), 0.0))
        finish[step] = free[worker] = start + durations[step] + overhead
        pending.remove(step)
    return max(finish.values())


def critical_path(durations: dict) -> float:
    memo: dict = {}

    def until(step):  # time from the start to the end of step along its chain
        if step not in memo:
            before = dependency(step)
            memo[step] = durations[step] + (until(before) if before is not None else 0.0)
        return memo[step]

    return max(until(s) for s in durations)


def run_local(quick: bool, directory: Path, jobs: int, kind: str = "lottery") -> tuple[float, dict]:
    """The local executor in a fresh process (forking workers from a process connected to Ray is unsafe)."""
    done = subprocess.run([sys.executable, __file__, "--local-run", kind, str(jobs), str(directory)]
                          + (["--quick"] if quick else []), capture_output=True, text=True, check=True)
    found = numbers(directory) if kind == "lottery" else sweep_numbers(directory)
    return json.loads(done.stdout.strip().splitlines()[-1])["wall_s"], found


def make_sweep(quick: bool, splits, directory: Path) -> Sweep:
    train_cfg, grid = SWEEP_QUICK if quick else SWEEP_FULL
    return Sweep(directory, train_cfg, grid, splits, options=SWEEP_OPTIONS, progress=False)


def local_child(quick: bool, kind: str, jobs: int, directory: Path) -> None:
    train_cfg, cfg = QUICK if quick else FULL
    torch.set_num_threads(1)  # one core, like one worker
    splits = data.load(train_cfg.dataset, val_size=train_cfg.val_size)
    warm_up(train_cfg, splits, directory.parent)
    job = Experiment(directory, train_cfg, cfg, splits, progress=False) if kind == "lottery" \
        else make_sweep(quick, splits, directory)
    start = time.perf_counter()
    job.run(jobs=jobs)
    print(json.dumps({"wall_s": time.perf_counter() - start}))


def warm_up(train_cfg, splits, work: Path, **run) -> None:
    """One short dense run outside the timings (first-use imports and allocations)."""
    Experiment(work / "warmup", train_cfg, LotteryConfig(levels=0, replicates=1), splits, progress=False).run(**run)
    shutil.rmtree(work / "warmup")


def _warm_worker(train_cfg, splits, directory: str) -> str:
    """One short dense run in a worker process: its first-use costs paid outside the timings."""
    warm_up(train_cfg, splits, Path(directory))
    return "warm"


def warm_ray_workers(ray, train_cfg, splits, work: Path) -> None:
    """Start and warm the worker process of every node (a task pinned there) before the timings."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    task = ray.remote(_warm_worker)
    ray.get([task.options(num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
             .remote(train_cfg, splits, str(work / f"warm_{n[:8]}")) for n in nodes])


def run_ray(train_cfg, cfg, splits, directory: Path, address: str) -> tuple[float, dict, dict]:
    experiment = Experiment(directory, train_cfg, cfg, splits, progress=False)
    start = time.perf_counter()
    experiment.run(executor="ray", ray_address=address)
    wall = time.perf_counter() - start
    per_step = {}
    for marker in (directory / "ray_log" / "starts").glob("*.json"):
        record = json.loads(marker.read_text())
        per_step[tuple(record["step"])] = record["seconds"]
    return wall, numbers(directory), per_step


def run_ray_sweep(quick: bool, splits, directory: Path, address: str) -> tuple[float, dict, dict]:
    sweep = make_sweep(quick, splits, directory)
    start = time.perf_counter()
    sweep.run(executor="ray", ray_address=address)
    wall = time.perf_counter() - start
    per_run = {tuple(json.loads(m.read_text())["step"]): json.loads(m.read_text())["seconds"]
               for m in (directory / "ray_log" / "starts").glob("*.json")}
    return wall, sweep_numbers(directory), per_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny sweep (for the tests); results not written")
    parser.add_argument("--local-run", nargs=3, metavar=("KIND", "JOBS", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.local_run:
        return local_child(args.quick, args.local_run[0], int(args.local_run[1]), Path(args.local_run[2]))
    import ray  # the 'ray' extra
    from ray.cluster_utils import Cluster

    train_cfg, cfg = QUICK if args.quick else FULL
    rounds = 1 if args.quick else 2
    torch.set_num_threads(1)
    splits = data.load(train_cfg.dataset, val_size=train_cfg.val_size)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="scale_out_", dir=RUNS if RUNS.exists() else None))
    names = ["local --jobs 1", "local --jobs 2", "ray, 1 worker", "ray, 2 workers"]
    runs: dict = {name: [] for name in names}
    sweep_runs: dict = {name: [] for name in names}
    results, per_step_rounds, sweep_results, per_run_rounds = {}, [], {}, []
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                            "object_store_memory": STORE})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=STORE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        for round_ in range(rounds):  # the four side by side, repeated: timings on shared cores are noisy
            for jobs in (1, 2):
                name = f"local --jobs {jobs}"
                wall, results[name, round_] = run_local(args.quick, work / f"local{jobs}_{round_}", jobs)
                runs[name].append(wall)
                wall, sweep_results[name, round_] = run_local(args.quick, work / f"sweep_local{jobs}_{round_}", jobs,
                                                              kind="sweep")
                sweep_runs[name].append(wall)
            warm_ray_workers(ray, train_cfg, splits, work)  # worker processes started and warm before the timings
            wall, results["ray, 1 worker", round_], per_step = run_ray(train_cfg, cfg, splits, work / f"ray1_{round_}",
                                                                     cluster.address)
            runs["ray, 1 worker"].append(wall)
            per_step_rounds.append(per_step)
            wall, sweep_results["ray, 1 worker", round_], per_run = run_ray_sweep(args.quick, splits,
                                                                                  work / f"sweep_ray1_{round_}",
                                                                                  cluster.address)
            sweep_runs["ray, 1 worker"].append(wall)
            per_run_rounds.append(per_run)
            second = cluster.add_node(num_cpus=1, object_store_memory=STORE)
            cluster.wait_for_nodes()
            warm_ray_workers(ray, train_cfg, splits, work)
            wall, results["ray, 2 workers", round_], _ = run_ray(train_cfg, cfg, splits, work / f"ray2_{round_}",
                                                                 cluster.address)
            runs["ray, 2 workers"].append(wall)
            wall, sweep_results["ray, 2 workers", round_], _ = run_ray_sweep(args.quick, splits,
                                                                             work / f"sweep_ray2_{round_}",
                                                                             cluster.address)
            sweep_runs["ray, 2 workers"].append(wall)
            cluster.remove_node(second)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    walls = {name: min(times) for name, times in runs.items()}  # the least disturbed of the rounds
    per_step = {s: min(r[s] for r in per_step_rounds) for s in per_step_rounds[0]}
    reference = results["local --jobs 1", 0]
    identical = all(found == reference for found in results.values())
    serial = walls["local --jobs 1"]
    total = sum(per_step.values())
    overhead = max(walls["ray, 1 worker"] - total, 0.0) / len(per_step)  # per task, beyond the step's own work
    path = critical_path(per_step)
    ns = [1, 2, 4, 8, 16, 32]
    estimate = {n: simulate(per_step, n, overhead) for n in ns}
    sweep_walls = {name: min(times) for name, times in sweep_runs.items()}
    sweep_reference = sweep_results["local --jobs 1", 0]
    sweep_identical = all(found == sweep_reference for found in sweep_results.values())
    sweep_serial = sweep_walls["local --jobs 1"]
    per_run = {s: min(r[s] for r in per_run_rounds) for s in per_run_rounds[0]}
    sweep_total, longest = sum(per_run.values()), max(per_run.values())
    sweep_estimate = {n: simulate_independent(per_run, n) for n in ns}
    sweep_train, sweep_grid = SWEEP_QUICK if args.quick else SWEEP_FULL
    paper = {s: PAPER_STEP_S for s in
             [(r, 0, "dense") for r in range(3)] +
             [(r, level, v) for r in range(3) for level in range(1, 16) for v in ("imp", "reinit", "random", "oneshot")]}
    paper_estimate = {n: simulate(paper, n) for n in [1, 2, 4, 8, 16, 32, 64, 183]}
    payload = {
        "sweep": {"model": train_cfg.model, "dataset": train_cfg.dataset, "epochs": train_cfg.epochs,
                  "levels": cfg.levels, "replicates": cfg.replicates, "controls": cfg.controls,
                  "steps": len(reference)},
        "wall_s": {k: round(v, 2) for k, v in walls.items()},
        "wall_s_every_round": {k: [round(t, 2) for t in v] for k, v in runs.items()},
        "speedup_vs_local_jobs1": {k: round(serial / v, 2) for k, v in walls.items()},
        "identical_results": identical,
        "per_step_s": {"mean": round(statistics.mean(per_step.values()), 3), "total": round(total, 2),
                       "ray_overhead_per_task": round(overhead, 3)},
        "critical_path_s": round(path, 2),
        "estimate_s": {str(n): round(t, 1) for n, t in estimate.items()},
        "paper_sweep_estimate_h": {str(n): round(t / 3600, 2) for n, t in paper_estimate.items()},
        "sparse_sweep": {
            "sweep": {"model": sweep_train.model, "dataset": sweep_train.dataset, "epochs": sweep_train.epochs,
                      "methods": sweep_grid.methods, "sparsities": sweep_grid.sparsities, "seeds": sweep_grid.seeds,
                      "options": SWEEP_OPTIONS, "runs": len(sweep_reference)},
            "wall_s": {k: round(v, 2) for k, v in sweep_walls.items()},
            "wall_s_every_round": {k: [round(t, 2) for t in v] for k, v in sweep_runs.items()},
            "speedup_vs_local_jobs1": {k: round(sweep_serial / v, 2) for k, v in sweep_walls.items()},
            "identical_results": sweep_identical,
            "per_run_s": {"mean": round(statistics.mean(per_run.values()), 3), "total": round(sweep_total, 2),
                          "longest": round(longest, 2)},
            "estimate_s": {str(n): round(t, 1) for n, t in sweep_estimate.items()},
        },
        "load_average_1_5_15_min": load,
        "note": "this machine has 2 cores shared with other jobs: 2 workers cannot show more than ~2x",
    }
    if not (identical and sweep_identical):
        raise SystemExit(f"results differ between executors: {payload}")
    rows = [[k, f"{v:.1f}", " / ".join(f"{t:.1f}" for t in runs[k]), f"{serial / v:.2f}x"] for k, v in walls.items()]
    md = [f"# Scale-out of a lottery sweep and a sparse-training sweep: Ray vs the local process pool ({machine()['date']})", "",
          f"Sweep: {train_cfg.model} on {train_cfg.dataset}, {cfg.replicates} replicates x {cfg.levels} levels x "
          f"(imp, {cfg.controls}) + dense = {len(reference)} steps, {train_cfg.epochs} epochs a step. The four "
          f"executors run one after the other in one benchmark run, {rounds} round(s), each run into a fresh "
          f"directory (the local ones in a fresh process, timed around `Experiment.run` only); the table gives "
          f"each one's best round. Every run gave the same numbers as `--jobs 1` "
          f"({'checked: identical' if identical else 'DIFFERENT'}).", "",
          f"**This machine has {os.cpu_count()} cores, shared with other jobs: 2 workers cannot show more than ~2x** "
          f"(load average before the runs {load['before'][0]:.1f}, after {load['after'][0]:.1f}: other jobs took "
          f"cores too, so the ratios are lower bounds of what 2 free cores give). The Ray "
          "cluster is local (a head with no CPUs and one-CPU worker nodes on 127.0.0.1); its workers are "
          "started before the timings.", "",
          table(["executor", "wall (s), best round", "every round (s)", "speedup vs --jobs 1"], rows), "",
          "## Per step and on N machines", "",
          f"Measured per step (Ray, 1 worker): mean {statistics.mean(per_step.values()):.2f} s, "
          f"{total:.1f} s in all; Ray's cost per task beyond the step itself: {overhead:.2f} s. "
          f"Critical path (dense -> imp 1 -> ... -> imp {cfg.levels}, the chain every step hangs off): "
          f"{path:.1f} s.", "",
          "Estimated wall time of this sweep on N one-core workers (the DAG list-scheduled with the measured "
          "times, chain first; bounded below by the critical path and by total / N):", "",
          table(["N", "estimate (s)", "bound max(critical path, total/N) (s)"],
                [[n, f"{estimate[n]:.1f}", f"{max(path, total / n):.1f}"] for n in ns]), "",
          f"The paper-scale sweep of `benchmarks/lottery.py` study A (3 replicates x 15 levels x imp, reinit, "
          f"random, one-shot + dense = {len(paper)} runs of ~{PAPER_STEP_S:.0f} s each on Fashion-MNIST): "
          + ", ".join(f"N={n}: {t / 3600:.2f} h" for n, t in paper_estimate.items())
          + f". Its critical path is 16 runs ({16 * PAPER_STEP_S / 60:.0f} min): past ~{len(paper) // 16} "
          "workers more machines cannot help; more replicates or reset variants add width, not length.", "",
          "## A sparse-training sweep (`deepzip sweep run`)", "",
          f"Grid: {sweep_train.model} on {sweep_train.dataset}, methods {sweep_grid.methods} x sparsities "
          f"{sweep_grid.sparsities} x seeds {sweep_grid.seeds} = {len(sweep_reference)} runs, {sweep_train.epochs} "
          f"epochs a run, update interval {SWEEP_OPTIONS['update_interval']}; the four executors in the same rounds as "
          f"the lottery sweep above. Every run gave the same numbers as `--jobs 1` "
          f"({'checked: identical' if sweep_identical else 'DIFFERENT'}).", "",
          table(["executor", "wall (s), best round", "every round (s)", "speedup vs --jobs 1"],
                [[k, f"{v:.1f}", " / ".join(f"{t:.1f}" for t in sweep_runs[k]), f"{sweep_serial / v:.2f}x"]
                 for k, v in sweep_walls.items()]), "",
          f"Measured per run (Ray, 1 worker): mean {statistics.mean(per_run.values()):.2f} s, {sweep_total:.1f} s in "
          f"all, longest {longest:.2f} s. The runs are independent, so N one-core workers take about "
          f"max(longest run, total / N): "
          + ", ".join(f"N={n}: {sweep_estimate[n]:.1f} s" for n in ns)
          + f" (with {len(sweep_reference)} runs, more than {len(sweep_reference)} workers cannot help)."]
    if args.quick:
        RUNS.mkdir(parents=True, exist_ok=True)
        (RUNS / "scale_out_quick.json").write_text(json.dumps(payload, indent=2) + "\n")
        print("\n".join(md))
    else:
        write_results("scale_out", payload, "\n".join(md))


if __name__ == "__main__":
    main()
