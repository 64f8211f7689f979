"""Chunker with the real all-MiniLM-L6-v2 tokenizer: limits, overlap, CJK, bad config."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qpipe_dagster.parse.chunk import Chunk, Chunker, default_max_seq_length, sentence_spans


def _model_tokens(tokenizer: Any, text: str) -> list[int]:
    """Token ids the model would see for ``text`` (without its special tokens)."""
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def _check_invariants(tokenizer: Any, chunker: Chunker, text: str, chunks: list[Chunk]) -> None:
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert chunk.text == text[chunk.char_start : chunk.char_end]
        assert chunk.text.strip() == chunk.text and chunk.text
        assert chunk.token_count == len(_model_tokens(tokenizer, chunk.text))
        assert 0 < chunk.token_count <= chunker.max_tokens
    starts = [c.char_start for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    # together the chunks cover every token of the text
    covered = 0
    for chunk in chunks:
        assert chunk.char_start <= covered or not text[covered : chunk.char_start].strip()
        covered = max(covered, chunk.char_end)
    assert not text[covered:].strip()


PROSE = " ".join(
    f"Sentence {i} says that the {i}-bar breakout filter reduced whipsaws in sideways markets."
    for i in range(60)
)


def test_packs_whole_sentences_within_limit(tokenizer: Any) -> None:
    chunker = Chunker(tokenizer, max_tokens=60, overlap_tokens=0)
    chunks = chunker.chunk(PROSE)
    _check_invariants(tokenizer, chunker, PROSE, chunks)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text.startswith("Sentence ") and chunk.text.endswith("markets.")
    # no overlap: consecutive chunks are disjoint
    assert all(a.char_end <= b.char_start for a, b in itertools.pairwise(chunks))


def test_overlap_in_tokens(tokenizer: Any) -> None:
    chunker = Chunker(tokenizer, max_tokens=60, overlap_tokens=20)
    chunks = chunker.chunk(PROSE)
    _check_invariants(tokenizer, chunker, PROSE, chunks)
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.char_start < prev.char_end, "consecutive chunks must overlap"
        shared = PROSE[nxt.char_start : prev.char_end]
        assert 0 < len(_model_tokens(tokenizer, shared)) <= 20
        assert prev.text.endswith(shared)
        assert nxt.text.startswith(shared)


def test_long_sentence_is_split_at_token_boundaries(tokenizer: Any) -> None:
    sentence = "The order book " + " ".join(f"level{i} holds liquidity" for i in range(300)) + "."
    chunker = Chunker(tokenizer, max_tokens=50, overlap_tokens=10)
    chunks = chunker.chunk(sentence)
    _check_invariants(tokenizer, chunker, sentence, chunks)
    assert len(chunks) > 10
    # cuts fall between words, never inside one
    for chunk in chunks:
        assert sentence[chunk.char_start - 1 : chunk.char_start].strip() == ""
        assert sentence[chunk.char_end : chunk.char_end + 1] in ("", " ", ".")


def test_5000_chars_without_punctuation(tokenizer: Any) -> None:
    words = ["momentum", "carry", "value", "volatility", "breakout", "liquidity", "spread"]
    text = " ".join(words[i % len(words)] for i in range(700))[:5000]
    assert len(text) == 5000 and "." not in text
    chunker = Chunker(tokenizer, max_tokens=200, overlap_tokens=32)
    chunks = chunker.chunk(text)
    _check_invariants(tokenizer, chunker, text, chunks)
    assert len(chunks) >= 4


def test_5000_chars_without_spaces_or_punctuation(tokenizer: Any) -> None:
    text = ("abcdefghij" * 500) + "" + ("0123456789" * 10)
    chunker = Chunker(tokenizer, max_tokens=64, overlap_tokens=8)
    chunks = chunker.chunk(text)
    _check_invariants(tokenizer, chunker, text, chunks)


def test_cjk_text_without_spaces(tokenizer: Any) -> None:
    text = "日本銀行は金融政策決定会合で短期金利の誘導目標を据え置くことを決めました。" * 40
    chunker = Chunker(tokenizer, max_tokens=64, overlap_tokens=8)
    chunks = chunker.chunk(text)
    _check_invariants(tokenizer, chunker, text, chunks)
    assert len(chunks) > 5
    assert chunks[0].text.endswith("。")  # sentence-aware for CJK full stops too


def test_mixed_paragraphs_and_newlines(tokenizer: Any) -> None:
    text = "Heading without a full stop\n\n" + PROSE + "\n\n- list item one\n- list item two\n"
    chunker = Chunker(tokenizer, max_tokens=80, overlap_tokens=16)
    chunks = chunker.chunk(text)
    _check_invariants(tokenizer, chunker, text, chunks)
    assert chunks[0].text.startswith("Heading without a full stop")


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t  \n"])
def test_empty_text(tokenizer: Any, text: str) -> None:
    assert Chunker(tokenizer).chunk(text) == []


def test_short_text_is_one_chunk(tokenizer: Any) -> None:
    chunks = Chunker(tokenizer).chunk("  Bitcoin rallied.  ")
    count = len(_model_tokens(tokenizer, "Bitcoin rallied."))  # bit ##coin rallied .
    assert count == 5
    assert chunks == [Chunk(0, "Bitcoin rallied.", count, 2, 18)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"max_tokens": -5}, "max_tokens must be a positive integer"),
        ({"max_tokens": 2.5}, "max_tokens must be a positive integer"),
        ({"overlap_tokens": -1}, "overlap_tokens must be an integer >= 0"),
        ({"max_tokens": 50, "overlap_tokens": 50}, "must be smaller than max_tokens"),
        ({"max_tokens": 511}, r"exceeds tokenizer.model_max_length \(512\)"),
        ({"max_tokens": 255, "model_max_seq_length": 256}, r"use max_tokens <= 254"),
    ],
)
def test_invalid_config(tokenizer: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Chunker(tokenizer, **kwargs)


def test_limits_that_fit_are_accepted(tokenizer: Any) -> None:
    assert default_max_seq_length() == 256
    Chunker(tokenizer, max_tokens=254, overlap_tokens=0, model_max_seq_length=256)
    Chunker(tokenizer, max_tokens=510)


def test_slow_tokenizer_is_rejected_clearly() -> None:
    class NotATokenizer:
        is_fast = False

    with pytest.raises(ValueError, match="fast"):
        Chunker(NotATokenizer())


def test_sentence_spans() -> None:
    text = 'He said "sell." Then: buy!  Why?\n\nNext para。次の文。'
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        'He said "sell."',
        "Then: buy!",
        "Why?",
        "Next para。",
        "次の文。",
    ]


@settings(max_examples=25, deadline=None)
@given(
    text=st.lists(
        st.sampled_from([*"abc xyz.!?\n日本。é-", "word ", "token. ", "liquidity "]),
        max_size=300,
    ).map("".join),
    max_tokens=st.integers(min_value=4, max_value=40),
    data=st.data(),
)
def test_invariants_hold_for_any_text(
    tokenizer: Any, text: str, max_tokens: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(min_value=0, max_value=max_tokens - 1))
    chunker = Chunker(tokenizer, max_tokens=max_tokens, overlap_tokens=overlap)
    _check_invariants(tokenizer, chunker, text, chunker.chunk(text))


@pytest.mark.parametrize(
    ("text", "max_tokens"),
    [
        ("ayliquidity xaaa", 4),
        (
            "ayliquidityliquidity ayliquidityayliquidity日token. ééxtoken.  。token. 。liquidity 。"
            "liquidity token. word 。ayliquidityayliquidityéxword ",
            16,  # the smallest chunk size ParseConfig allows
        ),
    ],
)
def test_halved_chunks_carry_no_edge_whitespace(tokenizer: Any, text: str, max_tokens: int) -> None:
    # A chunk re-tokenized over the limit is halved by characters; a half used to keep the
    # space it was cut next to ('ity ' / ' ?-ayliquidity!a.'), found by the invariants test.
    chunker = Chunker(tokenizer, max_tokens=max_tokens, overlap_tokens=0)
    _check_invariants(tokenizer, chunker, text, chunker.chunk(text))
