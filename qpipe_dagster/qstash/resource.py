"""Dagster resource around QStashClient, configured from QSTASH_TOKEN / QSTASH_URL."""

from __future__ import annotations

from dagster import ConfigurableResource

from qpipe_dagster.qstash.client import DEFAULT_BASE_URL, PublishOptions, QStashClient


class QStashResource(ConfigurableResource):
    """Publishes to QStash; e.g. QStashResource(token=EnvVar("QSTASH_TOKEN"))."""

    token: str
    base_url: str = DEFAULT_BASE_URL
    max_retries: int = 4

    def get_client(self) -> QStashClient:
        return QStashClient(self.token, self.base_url, max_retries=self.max_retries)

    def publish_json(
        self, url: str, payload: object, options: PublishOptions | None = None
    ) -> dict | list[dict]:
        with self.get_client() as client:
            return client.publish_json(url, payload, options)
