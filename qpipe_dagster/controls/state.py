"""The halt record, stored in the instance's key-value store (shared by every process)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

HALT_KEY = "qpipe/halt"


@dataclass(frozen=True)
class HaltRecord:
    reason: str
    halted_at: float
    by: str  # user@host that ran `qpipe halt`
    stopped_sensors: list[str] = field(default_factory=list)
    stopped_schedules: list[str] = field(default_factory=list)
    canceled_runs: list[str] = field(default_factory=list)
    terminated_runs: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def read_halt(instance) -> HaltRecord | None:
    raw = instance.run_storage.get_cursor_values({HALT_KEY}).get(HALT_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return HaltRecord(**data)
    except (ValueError, TypeError):
        # a damaged record still means someone halted: keep the pipeline halted, say why
        return HaltRecord(reason=f"(unreadable halt record {raw[:60]!r})", halted_at=0.0, by="?")


def write_halt(instance, record: HaltRecord) -> None:
    instance.run_storage.set_cursor_values({HALT_KEY: record.to_json()})


def clear_halt(instance) -> None:
    instance.run_storage.set_cursor_values({HALT_KEY: ""})
