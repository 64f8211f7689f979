"""Embedding stage: turn text chunks into vectors with a sentence-transformers model."""
