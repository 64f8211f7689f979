"""Prometheus text-format metrics without a client library: counters and one latency histogram."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()
        self.verify_failures: Counter[str] = Counter()
        self._bucket_counts = [0] * len(LATENCY_BUCKETS_S)
        self._latency_sum = 0.0
        self._latency_count = 0

    def delivery(self, outcome: str, seconds: float) -> None:
        self.deliveries[outcome] += 1
        self._latency_sum += seconds
        self._latency_count += 1
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if seconds <= bound:
                self._bucket_counts[i] += 1
                break

    def render(self, inbox_depth: Callable[[], int]) -> str:
        lines = [
            "# HELP qpipe_receiver_deliveries_total Deliveries to /api/qstash by outcome.",
            "# TYPE qpipe_receiver_deliveries_total counter",
        ]
        lines += [
            f'qpipe_receiver_deliveries_total{{outcome="{k}"}} {v}'
            for k, v in sorted(self.deliveries.items())
        ]
        lines += [
            "# HELP qpipe_receiver_verify_failures_total Signature verification failures by reason.",
            "# TYPE qpipe_receiver_verify_failures_total counter",
        ]
        lines += [
            f'qpipe_receiver_verify_failures_total{{reason="{k}"}} {v}'
            for k, v in sorted(self.verify_failures.items())
        ]
        try:
            depth = float(inbox_depth())
        except Exception:
            depth = float("nan")
        lines += [
            "# HELP qpipe_receiver_inbox_depth Messages waiting for the sensor.",
            "# TYPE qpipe_receiver_inbox_depth gauge",
            f"qpipe_receiver_inbox_depth {depth:g}".replace("nan", "NaN"),
            "# HELP qpipe_receiver_request_seconds Latency of /api/qstash requests.",
            "# TYPE qpipe_receiver_request_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS_S, self._bucket_counts, strict=True):
            cumulative += count
            lines.append(f'qpipe_receiver_request_seconds_bucket{{le="{bound:g}"}} {cumulative}')
        lines += [
            f'qpipe_receiver_request_seconds_bucket{{le="+Inf"}} {self._latency_count}',
            f"qpipe_receiver_request_seconds_sum {self._latency_sum:.6f}",
            f"qpipe_receiver_request_seconds_count {self._latency_count}",
        ]
        return "\n".join(lines) + "\n"
