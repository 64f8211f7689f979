"""Market data: load and validate OHLCV price files."""
