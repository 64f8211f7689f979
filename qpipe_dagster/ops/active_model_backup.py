"""The active-model choice as a backup component: `active-model`, one small JSON file.

Whichever store holds the choice (the local active_model.json or the PostgreSQL table beside the
registry, see `concepts.active_model`) it travels in one format and restores into whichever
store the restoring host uses; so a local backup restored with QPIPE_CONCEPTS_URL set moves the
choice into PostgreSQL, as it moves the registry. Without it, a restored host would search the
default model's collection, which may be empty or stale after a rotation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from qpipe_dagster.concepts import ActiveModelStore, ModelChoice, RegistryError
from qpipe_dagster.concepts.active_model import choice_problem
from qpipe_dagster.ops.manifest import JSON_COMPONENTS, BackupError, Component, sha256_file

(ACTIVE_MODEL,) = JSON_COMPONENTS
FILE = "active_model.json"


def _canonical(choice: ModelChoice) -> bytes:
    return json.dumps(asdict(choice), sort_keys=True).encode()


def digest(choice: ModelChoice) -> str:
    return hashlib.sha256(_canonical(choice)).hexdigest()


def snapshot_active_model(store: ActiveModelStore, staging: Path) -> Component | None:
    """The recorded choice as staging/active_model.json; None when none is recorded (the
    default model applies, and a restore leaves the destination on its default too)."""
    try:
        choice = store.get()
    except RegistryError as exc:  # damaged or unreachable: say so before anything is uploaded
        raise BackupError(f"{ACTIVE_MODEL}: cannot back it up: {exc}") from None
    if choice is None:
        return None
    path = staging / FILE
    path.write_bytes(_canonical(choice))
    return Component(
        name=ACTIVE_MODEL,
        kind="json",
        file=FILE,
        rows=1,
        digest=digest(choice),
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
    )


def read_active_model(path: Path, c: Component) -> ModelChoice:
    """The backed-up choice, checked against the manifest; a BackupError names what differs."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        why = choice_problem(data.get("name"), data.get("truncate_dim"))
        if why:
            raise ValueError(why)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BackupError(f"{c.file} ({c.name}) is not a model choice ({exc})") from None
    choice = ModelChoice(data["name"], data.get("truncate_dim"))
    if digest(choice) != c.digest or c.rows != 1:
        raise BackupError(
            f"{c.file} ({c.name}): its content digest differs from the manifest's; refusing "
            "to restore it"
        )
    return choice


def destination_problem(store: ActiveModelStore) -> str | None:
    """Why the choice cannot be restored here: one is already recorded, or it is unreadable."""
    try:
        choice = store.get()
    except RegistryError as exc:
        return str(exc)
    if choice is None:
        return None
    shown = f"{choice.name}@{choice.truncate_dim}" if choice.truncate_dim else choice.name
    return f"the active model choice in {store.where} is already set ({shown})"


def restore_active_model(path: Path, store: ActiveModelStore, c: Component) -> tuple[int, str]:
    """Record the backed-up choice; (rows, digest) of what the store then holds."""
    store.set(read_active_model(path, c))
    landed = store.get()
    return (0, "") if landed is None else (1, digest(landed))
