"""The ``deepzip`` command: thin subcommands over the library; every option comes from a config dataclass."""

from __future__ import annotations

import argparse
import sys

import torch

from ..errors import DeepzipError
from ..train.device import warm_vml
from . import bench_cmd, compress_cmd, lottery_cmd, pretrained_cmd, prune_cmd, quantize_cmd, sparse_cmd, sweep_cmd, train_cmd

COMMANDS = {"demo": compress_cmd.Demo, "train": train_cmd, "prune": prune_cmd,
            "sensitivity": prune_cmd.Sensitivity, "quantize": quantize_cmd,
            "compress": compress_cmd, "inspect": compress_cmd.Inspect, "evaluate": compress_cmd.Evaluate,
            "decompress": compress_cmd.Decompress, "bench": bench_cmd,
            "lottery": lottery_cmd, "sparse-train": sparse_cmd, "sweep": sweep_cmd,
            "compress-pretrained": pretrained_cmd}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepzip",
        description="Make neural networks small and fast: pruning, trained quantization, entropy "
                    "coding (Deep Compression) and lottery-ticket experiments.",
    )
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for torch and deepzip's kernels (default: all cores)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.HELP, description=command.HELP,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            print(f"deepzip: error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)  # deepzip's sparse kernels follow torch's thread count
    warm_vml()  # before any stage's math: a command's results must not depend on how threads met MKL's first calls
    try:
        return args.run(args) or 0
    except (DeepzipError, ValueError, TypeError) as exc:
        print(f"deepzip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused mid-run (disk full, permissions changed): no traceback
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"deepzip {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deepzip {args.command}: interrupted; rerun the same command with --resume to continue",
              file=sys.stderr)
        return 130
