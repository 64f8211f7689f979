"""Publishing to QStash (httpx client + Dagster resource) and local-mode signed delivery."""
