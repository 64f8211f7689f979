"""Parse stage: raw crawled HTML -> clean article text -> embedding-sized chunks (no Dagster)."""

from qpipe_dagster.parse.chunk import Chunk, Chunker, default_max_seq_length, default_tokenizer
from qpipe_dagster.parse.decode import decode_html
from qpipe_dagster.parse.extract import PARSER_VERSION, Article, extract_article

__all__ = [
    "PARSER_VERSION",
    "Article",
    "Chunk",
    "Chunker",
    "decode_html",
    "default_max_seq_length",
    "default_tokenizer",
    "extract_article",
]
