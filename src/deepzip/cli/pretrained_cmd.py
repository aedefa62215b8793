"""``deepzip compress-pretrained``: a local Hugging Face model + a text file -> a pruned and/or weight-shared
.dz, no labels."""

from __future__ import annotations

from pathlib import Path

from ..config import add_arguments as add_config_arguments, from_args
from ..train.pretrained import PretrainedConfig, compress_pretrained

HELP = ("compress a pretrained transformer without labels: calibration pruning (wanda, sparsegpt, owl) on a text "
        "file, optional distillation and weight sharing (kmeans or sensitivity-weighted, per-row codebooks, "
        "outliers, error feedback; --sparsity 0: sharing only), into a .dz")


def add_arguments(parser) -> None:
    parser.add_argument("model_dir", help="local Hugging Face model directory (or a model .zip / .whl)")
    parser.add_argument("--calibration", required=True,
                        help="text file, one passage per line (or the 'bible' program's output); every tenth "
                             "group of ten lines is held out for the report's evaluation")
    parser.add_argument("--out", default="model.dz", help="the .dz file to write (its report: OUT.json)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser, PretrainedConfig)


def run(args) -> int:
    cfg = from_args(PretrainedConfig, args)
    if not Path(args.model_dir).exists():
        raise ValueError(f"MODEL_DIR: {args.model_dir} does not exist (a Hugging Face model directory, .zip or .whl)")
    if not Path(args.calibration).is_file():
        raise ValueError(f"--calibration: {args.calibration} is not a file")
    report = compress_pretrained(args.model_dir, args.calibration, cfg, args.out, progress=not args.quiet)
    print(f"{args.out}: {report['bytes']:,} bytes ({report['ratio_vs_fp32']:.2f}x smaller than fp32), "
          f"sparsity {report['sparsity']:.1%}, mean embedding cosine to the original {report['cosine']:.4f} "
          f"on {report['evaluation_passages']} held-out passages; decoded bit-exactly: {report['decoded_bit_exact']}; "
          f"report: {args.out}.json")
    return 0
