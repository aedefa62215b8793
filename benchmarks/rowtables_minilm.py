"""all-MiniLM-L6-v2 in the pretrained pipeline's format, end to end on the CPU runtime (1 thread).

    python benchmarks/rowtables_minilm.py [--model DIR] [--repeats 200] [--outliers 0.005]

Every Linear layer weight-shared as `compress-pretrained` does it (`WeightedKMeans`: a 4-bit codebook per
output row, a share of the weights kept exact; importance uniform here: the calibration statistics change
the codebooks, not the layers' format or speed), then `runtime.convert` with the sentence as the example
(calibration keeps each layer's fastest form) and with ``mode="codes"`` (every Linear from its codes: the
row-table kernel, `runtime.rowtables`), timed against the fp32 model (torch, MKL), interleaved. Prints the
speedups, the kernels chosen and the largest output difference from the weight-shared model run densely.
Needs the model as a local Hugging Face directory (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import _common  # noqa: F401  (sys.path)
import torch

import deepzip
from deepzip import runtime
from deepzip.quantize import WeightedKMeans
from deepzip.runtime.timing import interleaved

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."  # as benchmarks/runtime.py
DEFAULT_MODEL = Path("/tmp/calib-dl/cache/all-MiniLM-L6-v2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="all-MiniLM-L6-v2 as a Hugging Face directory")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls of each model")
    parser.add_argument("--outliers", type=float, default=0.005, help="share of each Linear's weights kept exact")
    args = parser.parse_args()
    if not (args.model / "config.json").exists():
        parser.error(f"no Hugging Face model directory at {args.model}")
    import transformers  # an optional extra: only this script needs it

    torch.set_num_threads(1)
    fp32 = transformers.AutoModel.from_pretrained(args.model).eval()
    ids = transformers.AutoTokenizer.from_pretrained(args.model)([SENTENCE], return_tensors="pt")["input_ids"]
    shared = copy.deepcopy(fp32)
    embeddings = [n for n, _ in shared.named_parameters() if n.startswith("embeddings.") and n.endswith("embeddings.weight")]
    deepzip.quantize(shared, WeightedKMeans(bits=4, importance="none", granularity="row", outliers=args.outliers,
                                            exclude=embeddings))
    with torch.inference_mode():
        want = shared(ids).last_hidden_state  # the weight-shared model, run densely by torch
    auto = runtime.convert(copy.deepcopy(shared), example=ids)
    codes = runtime.convert(copy.deepcopy(shared), example=ids, mode="codes", fuse="off")
    control = copy.deepcopy(fp32)
    times = interleaved({"torch fp32": lambda: fp32(ids), "deepzip auto": lambda: auto(ids),
                         "deepzip codes": lambda: codes(ids), "torch fp32 again": lambda: control(ids)},
                        repeats=args.repeats)
    with torch.inference_mode():
        for name, model in (("deepzip auto", auto), ("deepzip codes", codes)):
            print(f"{name}: max |output - weight-shared dense| = {(model(ids).last_hidden_state - want).abs().max():.2e}")
    print(f"{ids.shape[1]} tokens, 1 thread")
    for name, seconds in times.items():
        print(f"{name:18s} {seconds * 1e3:7.2f} ms  {times['torch fp32'] / seconds:.2f}x torch fp32")
    for name, model in (("auto", auto), ("codes", codes)):
        kinds = {}
        for d in runtime.decisions(model):
            key = d["kernel"] + (f" ({d['codes_kernel']})" if d["kernel"] == "codes" else "")
            kinds[key] = kinds.get(key, 0) + 1
        print(f"{name}: {kinds}; fused: {runtime.fusion(model)['fused']}")


if __name__ == "__main__":
    main()
