"""The block-by-block calibration loop: each repeated block of a model (a transformer layer) is
compressed on the outputs of the already-compressed blocks before it (SparseGPT's and GPTQ's
sequential scheme, for any ``nn.Module``).

    results = sequential(model, batches, process)   # process(index, name, block, stats) -> result

1. The blocks are found generically (`find_blocks`): the ``nn.ModuleList`` of modules of one class with
   the most parameters (BERT's ``encoder.layer``, GPT's ``h``, ...), or the ones named by ``blocks=``;
   a model without such a list is one block.
2. The inputs of the first block are captured once (positional and keyword arguments, through a forward
   pre-hook that stops the forward there).
3. For each block in order: its layers' input statistics are gathered on the current inputs
   (`deepzip.calibrate.statistics`), ``process`` compresses the block in place, and the block's outputs,
   now from the compressed block, become the next block's inputs (the hidden state is the block's first
   argument, or its ``hidden_states`` keyword; the output's first element replaces it).

Memory: the activations of one block for the whole calibration set (kept on the model's device), plus
the statistics of one block's layers: ``in_features^2`` floats per Linear when ``gram=True``. Nothing
of the earlier blocks is kept.

Resuming: with ``checkpoint_dir`` each finished block's result (what ``process`` returns: a nested dict
of tensors and JSON values) is written atomically; a rerun gives the finished blocks' results to
``restore(index, name, block, result)``, which must put the block back as ``process`` left it, then
continues with the next block on inputs recomputed by the model itself (the same operations on the
same values, so the results are the same as an uninterrupted run).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_text, load_state, save_state
from ..errors import CheckpointError
from .statistics import LayerStatistics, Recorder, batch_to, call_model, model_device, statistic_layers, token_mask

Process = Callable[[int, str, nn.Module, dict[str, LayerStatistics]], Any]
Restore = Callable[[int, str, nn.Module, Any], None]
MANIFEST = "manifest.json"


class _Stop(Exception):
    """Raised by the capturing pre-hook: the rest of the forward is not needed."""


def _same_class_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.ModuleList) and len(module) > 0
            and all(type(child) is type(module[0]) for child in module)]


def find_blocks(model: nn.Module, blocks: str | Sequence[nn.Module] | None = None) -> list[tuple[str, nn.Module]]:
    """[(module name, block)] in order: the blocks ``blocks`` names (a ModuleList / Sequential by name, or
    a list of the model's submodules), else the model's largest ModuleList of one class (by parameter
    count), else the whole model as one block."""
    names = {id(m): n for n, m in model.named_modules()}
    if blocks is None:
        lists = _same_class_lists(model)
        if not lists:
            return [("", model)]
        size = lambda item: sum(p.numel() for p in item[1].parameters())  # noqa: E731
        name, found = max(lists, key=size)  # max keeps the first of equals
        return [(names[id(b)], b) for b in found]
    if isinstance(blocks, str):
        try:
            found = model.get_submodule(blocks)
        except AttributeError:
            found = None
        if not isinstance(found, (nn.ModuleList, nn.Sequential)) or len(found) == 0:
            candidates = ", ".join(n for n, _ in _same_class_lists(model)) or "(none)"
            raise ValueError(f"blocks={blocks!r} is not a non-empty ModuleList or Sequential of the model; "
                             f"its lists of same-class modules: {candidates}")
        return [(names[id(b)], b) for b in found]
    blocks = list(blocks)
    strangers = [type(b).__name__ for b in blocks if not isinstance(b, nn.Module) or id(b) not in names]
    if not blocks or strangers:
        raise ValueError(f"blocks must be a name or a non-empty list of the model's own submodules "
                         f"(not: {', '.join(strangers) or 'an empty list'})")
    return [(names[id(b)], b) for b in blocks]


def capture_inputs(model: nn.Module, block: nn.Module, batches: Sequence[Any]) -> list[tuple[tuple, dict]]:
    """The (args, kwargs) that ``block`` is called with for each batch (the forward stops there)."""
    captured: list[tuple[tuple, dict]] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured.append((args, dict(kwargs)))
        raise _Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                call_model(model, batch)
            except _Stop:
                continue
            raise ValueError(f"the model's forward never called the block {type(block).__name__}; "
                             f"name the repeated blocks with blocks=")
    finally:
        handle.remove()
    return captured


def hidden_of(output: Any) -> torch.Tensor:
    """A block's hidden-state output: the tensor itself, a tuple's first element or a ModelOutput's first value."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if hasattr(output, "values"):
        first = next(iter(output.values()), None)
        if isinstance(first, torch.Tensor):
            return first
    raise TypeError(f"cannot find the hidden state in a block output of type {type(output).__name__}")


def with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    """The block's arguments with the hidden state (first argument or ``hidden_states=``) replaced."""
    if args:
        return (hidden, *args[1:]), kwargs
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": hidden}
    raise TypeError("a block's hidden state must be its first positional argument or the keyword hidden_states")


def fingerprint(batches: Sequence[Any]) -> str:
    """A hash of the calibration data, so a checkpoint directory is never resumed with other data."""
    digest = hashlib.sha256()

    def feed(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            digest.update(f"{tuple(obj.shape)}{obj.dtype}".encode())
            digest.update(obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for key in sorted(obj):
                digest.update(str(key).encode())
                feed(obj[key])
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                feed(item)
        else:
            digest.update(repr(obj).encode())

    feed(list(batches))
    return digest.hexdigest()


def _block_file(directory: Path, index: int) -> Path:
    return directory / f"block-{index:04d}.safetensors"


def _open_checkpoint(directory: Path, manifest: dict) -> int:
    """How many blocks ``directory`` holds finished (0 for a new directory); another run's directory is an error."""
    path = directory / MANIFEST
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: unreadable calibration manifest ({exc})") from None
        if existing != manifest:
            differ = sorted(k for k in set(existing) | set(manifest) if existing.get(k) != manifest.get(k))
            raise CheckpointError(f"{directory} holds another calibration run (different {', '.join(differ)}); "
                                  f"use a new checkpoint_dir or delete it")
    else:
        atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))
    done = 0
    while _block_file(directory, done).exists():
        done += 1
    return done


@torch.no_grad()
def sequential(model: nn.Module, batches: Iterable[Any], process: Process, *, blocks: str | Sequence[nn.Module] | None = None,
               names: Sequence[str] | None = None, gram: bool = False, restore: Restore | None = None,
               checkpoint_dir: str | Path | None = None, key: Any = None, progress: bool = True) -> list[Any]:
    """Compress ``model`` block by block on calibration ``batches`` (see the module docstring); returns
    each block's ``process`` result, in order.

    ``process(index, name, block, stats)`` gets the block (to change in place) and the input statistics
    of its Linear and Embedding layers, keyed by full weight name (only those in ``names`` when given;
    Gram matrices when ``gram``). ``checkpoint_dir`` makes the run resumable per block; it needs
    ``restore``, and ``key`` (any JSON value: the method's settings) tells runs apart, with the
    calibration data's hash and the block names. The model runs in eval mode on its own device.
    """
    found = find_blocks(model, blocks)
    where = model_device(model)
    batches = [batch_to(b, where) for b in batches]
    if not batches:
        raise ValueError("no calibration batches: give a non-empty iterable of tensors or dicts of tensors")
    if checkpoint_dir is not None and restore is None:
        raise TypeError("checkpoint_dir needs restore= (how a finished block's result is put back)")
    wanted = None if names is None else set(statistic_layers(model, names))
    directory = None if checkpoint_dir is None else Path(checkpoint_dir)
    done = 0
    if directory is not None:
        manifest = {"blocks": [name for name, _ in found], "data": fingerprint(batches), "key": key}
        done = _open_checkpoint(directory, json.loads(json.dumps(manifest)))
    training = model.training
    model.eval()
    results: list[Any] = []
    try:
        for index in range(done):
            result = load_state(_block_file(directory, index))["result"]
            restore(index, found[index][0], found[index][1], result)
            results.append(result)
        if done == len(found):
            return results
        inputs = capture_inputs(model, found[done][1], batches)
        masks = [token_mask(b) for b in batches]
        bar = tqdm(total=len(found), initial=done, desc="calibrating blocks", unit="block", disable=not progress)
        for index in range(done, len(found)):
            name, block = found[index]
            prefix = f"{name}." if name else ""
            layers = {prefix + n: m for n, m in statistic_layers(block).items()
                      if wanted is None or prefix + n in wanted}
            with Recorder(layers, gram) as recorder:
                for (args, kwargs), mask in zip(inputs, masks):
                    recorder.token_mask = mask
                    block(*args, **kwargs)
            result = process(index, name, block, recorder.stats)
            del recorder
            if directory is not None:
                save_state(_block_file(directory, index), {"result": result})
            results.append(result)
            if index + 1 < len(found):  # the next block sees this block's compressed outputs
                inputs = [with_hidden(args, kwargs, hidden_of(block(*args, **kwargs))) for args, kwargs in inputs]
            bar.update(1)
        bar.close()
    finally:
        model.train(training)
    return results
