"""Kill matrix: kill -9 `deepzip compress` and `deepzip lottery run` at random moments, rerun, compare.

For each command: one uninterrupted run (its wall time T), then the same command in a fresh directory
killed with SIGKILL at --kills random moments (one in each equal slice of T, so the kills spread over
the stages) and rerun after each kill, then rerun to the end. After every kill every file under a
final name must parse (.dz by deepzip's reader, .safetensors, .json, .jsonl): a crash may leave a
temporary ``.*.tmp`` file but never a half-written final one. At the end the final outputs must be
byte-identical to the uninterrupted run's: every file (the .dz, report.json/.md, summary.json,
steps.json, checkpoints, the experiment's masks and results) except plots and the elapsed-time column
of metrics.jsonl, which is compared without it. Everything runs at deepzip's default thread count for
this setup, 2 (--threads 2), where the codebook gradient used to differ between identical runs.

    python benchmarks/kill_matrix.py            # Fashion-MNIST, 2 threads; writes benchmarks/results/kill_matrix.*
    python benchmarks/kill_matrix.py --quick    # digits, a few kills, seconds per run (the test suite runs this)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

FULL = {
    "compress": ["--model", "lenet300_100", "--dataset", "fashion-mnist", "--train-epochs", "2",
                 "--prune-steps", "2", "--prune-retrain-epochs", "1", "--quant-finetune-epochs", "1",
                 "--train-eval-every", "300"],
    "lottery": ["--model", "lenet300_100", "--dataset", "fashion-mnist", "--levels", "2", "--replicates", "1",
                "--train-epochs", "1", "--controls", "reinit,random", "--train-eval-every", "300"],
}
QUICK = {
    "compress": ["--model", "lenet300_100", "--dataset", "digits", "--train-val-size", "300", "--train-epochs", "2",
                 "--train-batch-size", "32", "--prune-steps", "2", "--prune-retrain-epochs", "1",
                 "--quant-finetune-epochs", "1", "--train-eval-every", "10"],
    "lottery": ["--model", "lenet300_100", "--dataset", "digits", "--train-val-size", "300", "--levels", "1",
                "--replicates", "1", "--train-epochs", "2", "--train-batch-size", "32", "--controls", "reinit",
                "--train-eval-every", "10"],
}
SUBCOMMAND = {"compress": ["compress"], "lottery": ["lottery", "run"]}
SKIP_SUFFIXES = (".png", ".svg")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_temporary(path: Path) -> bool:
    return path.name.endswith(".tmp")


def parse_error(path: Path) -> str | None:
    """None if the file parses completely, else why not."""
    try:
        if path.suffix == ".dz":
            from deepzip.encode.api import read

            read(path)
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    f.get_tensor(key)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".md":
            path.read_text()
    except Exception as exc:  # noqa: BLE001  (any failure to parse is the finding)
        return f"{type(exc).__name__}: {str(exc)[:160]}"
    return None


def scan(runs: Path) -> dict:
    """Every file under ``runs``: final ones must parse; temporary ones are listed."""
    bad, temporary, count = {}, [], 0
    for path in sorted(runs.rglob("*")) if runs.exists() else []:
        if not path.is_file():
            continue
        count += 1
        if is_temporary(path):
            temporary.append(str(path.relative_to(runs)))
        elif (why := parse_error(path)) is not None:
            bad[str(path.relative_to(runs))] = why
    return {"files": count, "half_written": bad, "temporary": temporary}


def fingerprint(path: Path) -> str:
    if path.suffix == ".jsonl":  # elapsed seconds are wall-clock: compare everything else
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            row.pop("elapsed_s", None)
        return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return sha(path)


def difference(a: Path, b: Path) -> str:
    """Where two final files differ, for the report: a metrics file's first differing row and fields, a
    tensor file's differing tensors and their largest difference (so a rare mismatch can be diagnosed from
    the report alone)."""
    try:
        if a.suffix == ".jsonl":
            rows = [[json.loads(line) for line in p.read_text().splitlines() if line.strip()] for p in (a, b)]
            for ra, rb in zip(*rows):
                ra.pop("elapsed_s", None)
                rb.pop("elapsed_s", None)
                if ra != rb:
                    fields = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
                    return (f"first at iteration {ra.get('iteration')}: "
                            + ", ".join(f"{k} {ra.get(k)!r} vs {rb.get(k)!r}" for k in fields))
            return f"{len(rows[0])} vs {len(rows[1])} rows"
        if a.suffix == ".safetensors":
            from safetensors.torch import load_file

            ta, tb = load_file(str(a)), load_file(str(b))
            diffs = {k: float((ta[k].double() - tb[k].double()).abs().max()) for k in ta
                     if k in tb and ta[k].shape == tb[k].shape and not ta[k].equal(tb[k])}
            return ", ".join(f"{k} max {v:.2e}" for k, v in diffs.items()) or "same tensors, other bytes (metadata)"
    except Exception as exc:  # noqa: BLE001  (a diagnosis that fails must not hide the finding)
        return f"not described ({type(exc).__name__}: {exc})"
    return "bytes differ"


def final_files(runs: Path) -> dict[str, str]:
    return {str(p.relative_to(runs)): fingerprint(p) for p in sorted(runs.rglob("*"))
            if p.is_file() and not is_temporary(p) and p.suffix not in SKIP_SUFFIXES}


def start(command: list[str], cwd: Path, log) -> subprocess.Popen:
    env = {**os.environ, "DEEPZIP_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def run_kind(kind: str, args: list[str], threads: int, kills: int, rng: random.Random, work: Path,
             overhead_s: float) -> dict:
    command = ["nice", "-n", "10", sys.executable, "-m", "deepzip", "--threads", str(threads), *SUBCOMMAND[kind],
               *args, "--runs-dir", "runs", "--quiet"]
    clean, killed = work / kind / "clean", work / kind / "killed"
    clean.mkdir(parents=True)
    killed.mkdir(parents=True)
    started = time.time()
    with open(clean / "log.txt", "w") as log:
        rc = start(command, clean, log).wait()
    total = time.time() - started
    if rc != 0:
        raise SystemExit(f"{kind}: the uninterrupted run failed (rc {rc}); see {clean / 'log.txt'}")
    print(f"{kind}: uninterrupted run {total:.1f}s", flush=True)

    # one kill moment in each of `kills` equal slices of the uninterrupted run (after the startup)
    targets = sorted(rng.uniform(i / kills, (i + 1) / kills) for i in range(kills))
    attempts, previous = [], 0.0
    for k, target in enumerate(targets):
        delay = (overhead_s if k else 0.0) + max(0.2, (target - previous) * total)
        previous = target
        with open(killed / f"log{k}.txt", "w") as log:
            proc = start(command, killed, log)
            try:
                rc = proc.wait(timeout=delay)
                attempts.append({"attempt": k, "finished_before_kill": True, "rc": rc})
                print(f"{kind}: attempt {k} finished before its kill at {delay:.1f}s", flush=True)
                break
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the process group this script started
                proc.wait()
        state = scan(killed / "runs")
        attempts.append({"attempt": k, "killed_after_s": round(delay, 2), "target_fraction": round(target, 3), **state})
        print(f"{kind}: attempt {k} killed after {delay:.1f}s: {state['files']} files, half-written "
              f"{state['half_written'] or 'none'}, temporary {state['temporary'] or 'none'}", flush=True)
    with open(killed / "log_final.txt", "w") as log:
        rc = start(command, killed, log).wait()
    attempts.append({"attempt": "final", "rc": rc})

    a, b = final_files(clean / "runs"), final_files(killed / "runs")
    differing = sorted(f for f in set(a) & set(b) if a[f] != b[f])
    outputs = [f for f in a if f.endswith((".dz", "report.json", "report.md", "summary.json", "steps.json"))
               or f.startswith("lottery_")]
    kills_done = sum(1 for x in attempts if "killed_after_s" in x)
    result = {
        "command": " ".join(command[3:]),
        "uninterrupted_s": round(total, 1),
        "kills": kills_done,
        "attempts": attempts,
        "final_rc": rc,
        "files_compared": len(set(a) & set(b)),
        "only_uninterrupted": sorted(set(a) - set(b)),
        "only_killed": sorted(set(b) - set(a)),
        "differing": differing,
        "differences": {f: difference(clean / "runs" / f, killed / "runs" / f) for f in differing},
        "final_outputs": len(outputs),
        "half_written_after_a_kill": sum(len(x.get("half_written", {})) for x in attempts),
        "leftover_temporary": scan(killed / "runs")["temporary"],
    }
    result["identical"] = (rc == 0 and not differing and not result["only_uninterrupted"]
                           and not result["only_killed"] and result["half_written_after_a_kill"] == 0)
    dz = sorted((clean / "runs").rglob("model.dz"))
    if dz:
        result["dz_sha256"] = sha(dz[0])
    print(f"{kind}: {kills_done} kills; {result['files_compared']} files compared, differing {differing or 'none'}; "
          f"identical: {result['identical']}", flush=True)
    for name, how in result["differences"].items():
        print(f"{kind}:   {name}: {how}", flush=True)
    return result


def markdown(report: dict) -> str:
    from _common import table

    lines = [f"# Kill matrix: kill -9 and rerun vs uninterrupted ({report['setting']}, --threads {report['threads']})",
             "", f"**{report['headline']}**", "",
             "Every kill is SIGKILL to the whole process group at a random moment (one per equal slice of the "
             "uninterrupted run's time), followed by a rerun of the same command; after each kill every file "
             "under a final name must parse. Compared: every output file byte for byte (plots excepted; "
             "metrics.jsonl without its elapsed-seconds column).", ""]
    rows = []
    for kind, r in report["kinds"].items():
        rows.append([kind, r["kills"], f"{r['uninterrupted_s']}s", r["files_compared"], r["final_outputs"],
                     len(r["differing"]) + len(r["only_uninterrupted"]) + len(r["only_killed"]),
                     r["half_written_after_a_kill"], len(r["leftover_temporary"]),
                     "yes" if r["identical"] else "**no**"])
    lines.append(table(["command", "kills", "uninterrupted", "files compared", "final outputs", "differing",
                        "half-written after a kill", "leftover .tmp", "byte-identical"], rows))
    for kind, r in report["kinds"].items():
        lines += ["", f"## {kind}", "", f"`deepzip {r['command']}`", ""]
        lines.append(table(["attempt", "killed after", "slice target", "files then", "half-written", "temporary"],
                           [[x["attempt"], f"{x['killed_after_s']}s", x["target_fraction"], x["files"],
                             len(x["half_written"]), len(x["temporary"])]
                            for x in r["attempts"] if "killed_after_s" in x]))
        if r["differing"] or r["only_uninterrupted"] or r["only_killed"]:
            lines += ["", f"Differing: {r['differing']}; only uninterrupted: {r['only_uninterrupted']}; "
                          f"only killed: {r['only_killed']}"]
            lines += [f"- {name}: {how}" for name, how in r.get("differences", {}).items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, tiny runs, 2 kills per command (seconds)")
    parser.add_argument("--kills", type=int, default=None, help="kills per command (default 6; --quick 2)")
    parser.add_argument("--threads", type=int, default=2, help="deepzip --threads (the default setting: 2)")
    parser.add_argument("--kinds", default="compress,lottery", help="comma-separated: compress, lottery")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--overhead-s", type=float, default=None,
                        help="startup of a rerun (imports, data) added to each later kill's delay")
    parser.add_argument("--workdir", default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="write benchmarks/results/kill_matrix.md/.json (default: yes unless --quick)")
    args = parser.parse_args(argv)
    kills = args.kills or (2 if args.quick else 6)
    overhead = args.overhead_s if args.overhead_s is not None else (2.5 if args.quick else 4.0)
    settings = QUICK if args.quick else FULL
    rng = random.Random(args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kill_matrix_"))
    kinds = {}
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        kinds[kind] = run_kind(kind, settings[kind], args.threads, kills, rng, work, overhead)
    total_kills = sum(r["kills"] for r in kinds.values())
    identical = all(r["identical"] for r in kinds.values())
    report = {"setting": "quick: digits" if args.quick else "full: Fashion-MNIST", "threads": args.threads,
              "kills": total_kills, "identical": identical, "kinds": kinds,
              "headline": f"{total_kills} kills over {', '.join(kinds)} at {args.threads} threads: final outputs "
                          f"{'byte-identical' if identical else 'NOT byte-identical'} to uninterrupted runs, "
                          f"{sum(r['half_written_after_a_kill'] for r in kinds.values())} half-written files under a "
                          f"final name"}
    print(report["headline"], flush=True)
    if args.write if args.write is not None else not args.quick:
        from _common import write_results

        write_results("kill_matrix", report, markdown(report))
    else:
        (work / "kill_matrix.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {work / 'kill_matrix.json'}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
