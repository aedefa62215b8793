"""deepzip on a GPU: the gpu-marked tests, a lottery level of LeNet-5, and the whole Deep Compression
pipeline of LeNet-300-100 timed on the GPU beside the same on the CPU.

A GPU machine is lent only some of the time, so this runs in parts (each its own process, so one failing
part leaves the others' results), writing JSON files into --out; `report` then turns them, with the
tests' JUnit XML, into benchmarks/results/gpu.{json,md}:

    python benchmarks/gpu.py lottery  --out OUT --device cuda
    python benchmarks/gpu.py compress --out OUT --device cuda
    python benchmarks/gpu.py compress --out OUT --device cpu --threads 8
    python benchmarks/gpu.py report   --out OUT          # on any machine, after the parts

`--quick` shrinks every part to seconds (the tests run it on the CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
from _common import RESULTS, machine, table, write_results

from deepzip.data import datasets
from deepzip.lottery import Experiment, LotteryConfig, results
from deepzip.pipeline import compress
from deepzip.train import PruneConfig, QuantizeConfig, presets


def device_facts(device: str) -> dict:
    facts = machine()
    facts["device"] = device
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(device)
        try:
            facts["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                             capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            facts["driver"] = f"unknown ({error})"
        facts["cuda"] = torch.version.cuda
    return facts


def lottery_part(args) -> dict:
    """Level 0 (dense) and level 1 of the lottery-ticket experiment on LeNet-5, one replicate, no controls."""
    train_cfg = presets.baseline("lenet5")
    train_cfg = dataclasses.replace(train_cfg, device=args.device, epochs=args.epochs or train_cfg.epochs)
    if args.quick:
        train_cfg = dataclasses.replace(train_cfg, model="lenet300_100", dataset="digits", epochs=1, val_size=300,
                                        batch_size=32)
    splits = datasets.load(train_cfg.dataset, val_size=train_cfg.val_size)
    with tempfile.TemporaryDirectory() as runs:
        experiment = Experiment(Path(runs) / "lottery", train_cfg, LotteryConfig(levels=1, replicates=1, controls=""),
                                splits, progress=not args.quiet)
        start = time.perf_counter()
        experiment.run()
        seconds = time.perf_counter() - start
        levels = [{"step": f"level {r['level']} ({r['variant']})", "test_acc": r["test_acc"],
                   "remaining": r["remaining"] / 100} for r in results.steps(Path(runs) / "lottery")]
    return {"part": "lottery", "facts": device_facts(args.device), "model": train_cfg.model,
            "epochs_per_level": train_cfg.epochs, "seconds": seconds, "levels": levels}


def compress_part(args) -> dict:
    """`deepzip compress` of LeNet-300-100 with the CLI's defaults (the dense preset, iterative pruning to
    the default sparsity with retraining, k-means with fine-tuning, encode, decode), timed end to end."""
    if args.threads:
        torch.set_num_threads(args.threads)
    train_cfg = dataclasses.replace(presets.baseline("lenet300_100"), device=args.device)
    prune_cfg, quant_cfg = PruneConfig(), QuantizeConfig()
    splits = None
    if args.quick:
        train_cfg = dataclasses.replace(train_cfg, dataset="digits", epochs=1, val_size=300, batch_size=32)
        prune_cfg, quant_cfg = PruneConfig(steps=1, retrain_epochs=1), QuantizeConfig(finetune_epochs=1)
        splits = datasets.load("digits", val_size=300)
    with tempfile.TemporaryDirectory() as runs:
        start = time.perf_counter()
        report = compress(train_cfg, prune_cfg, quant_cfg, runs, splits=splits, progress=not args.quiet)
        seconds = time.perf_counter() - start
    return {"part": f"compress_{args.device.split(':')[0]}", "facts": device_facts(args.device),
            "threads": torch.get_num_threads(), "seconds": seconds, "accuracy": report["accuracy"],
            "compression": report["compression"]}


def tests_result(path: Path) -> dict:
    """The gpu tests' JUnit XML: counts and the names of any failures."""
    if not path.exists():
        return {"ran": False}
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [case.get("classname", "") + "::" + case.get("name", "") for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    return {"ran": True, **counts, "seconds": float(suite.get("time", 0)), "failed": failed}


def report(args) -> None:
    out = Path(args.out)
    parts = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("part_*.json"))}
    tests = tests_result(out / "gpu_tests.xml")
    payload = {"tests": tests, **{name.removeprefix("part_"): part for name, part in parts.items()}}
    payload["command"] = args.command
    write_results("gpu", payload, markdown(payload), Path(args.results))


def markdown(payload: dict) -> str:
    lines = ["# deepzip on a GPU", ""]
    gpu = next((p["facts"] for p in payload.values() if isinstance(p, dict) and "gpu" in p.get("facts", {})), None)
    if gpu is None:
        return "\n".join(lines + ["No part ran on a GPU: nothing to report."])
    lines += [f"Card: {gpu['gpu']}, driver {gpu['driver']}, CUDA {gpu['cuda']}, torch {gpu['torch']}, "
              f"{gpu['cpus']} CPU cores; run on {gpu['date']}.", ""]
    tests = payload["tests"]
    if tests.get("ran"):
        passed = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
        lines += ["## The gpu-marked tests (`pytest -m gpu`)", "",
                  f"{passed} passed, {tests['failures'] + tests['errors']} failed, {tests['skipped']} skipped "
                  f"({tests['seconds']:.0f} s)." + ("" if not tests["failed"] else " Failed: " + ", ".join(tests["failed"])),
                  ""]
    else:
        lines += ["The gpu tests did not run (no JUnit XML).", ""]
    if "lottery" in payload:
        lot = payload["lottery"]
        lines += ["## A lottery level of LeNet-5 on Fashion-MNIST (on the GPU)", "",
                  f"Levels 0 and 1, one replicate, {lot['epochs_per_level']} epochs per level: "
                  f"{lot['seconds']:.1f} s in all.", "",
                  table(["step", "test accuracy", "weights remaining"],
                        [[lv["step"], pct(lv["test_acc"]), pct(lv["remaining"])] for lv in lot["levels"]]), ""]
    runs = [payload[key] for key in ("compress_cuda", "compress_cpu") if key in payload]
    if runs:
        lines += ["## `deepzip compress` of LeNet-300-100 (CLI defaults), GPU beside CPU", "",
                  table(["device", "threads", "wall (s)", "decoded test acc", "compression"],
                        [[r["facts"].get("gpu", "CPU") if r["facts"]["device"] != "cpu" else "CPU",
                          r["threads"], f"{r['seconds']:.1f}", pct(r["accuracy"].get("decoded")),
                          f"{r['compression']:.1f}x"] for r in runs]), ""]
        if len(runs) == 2:
            speedup = runs[1]["seconds"] / runs[0]["seconds"]
            lines.append(f"GPU speedup over the CPU run: {speedup:.2f}x. The CPU run was pinned to its own half of "
                         "the cores while the GPU parts ran on the other half." +
                         ("" if speedup >= 1 else " The GPU is slower here: a 266k-parameter model at batch 60 "
                          "is bound by each step's kernel launches and Python, not by arithmetic."))
    if payload.get("command"):
        lines += ["", f"Command: `{payload['command']}`"]
    return "\n".join(lines)


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["lottery", "compress", "report"])
    parser.add_argument("--out", required=True, help="directory for the parts' JSON (and the tests' gpu_tests.xml)")
    parser.add_argument("--device", default="cuda", help="torch device of a lottery/compress part")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of a CPU part (0: torch's default)")
    parser.add_argument("--epochs", type=int, default=0, help="lottery: epochs per level (0: the LeNet-5 preset's)")
    parser.add_argument("--results", default=str(RESULTS), help="report: where gpu.json / gpu.md are written")
    parser.add_argument("--command", default="", help="report: the command that ran the parts (recorded)")
    parser.add_argument("--quick", action="store_true", help="seconds-long version on the digits data")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    if args.part == "report":
        report(args)
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = lottery_part(args) if args.part == "lottery" else compress_part(args)
    result["python"] = platform.python_version()
    name = result["part"]
    (Path(args.out) / f"part_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "facts"}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
