"""qpipe: crawl a trading concept, extract, embed, store and backtest it, as Dagster assets."""

__version__ = "0.1.0"
