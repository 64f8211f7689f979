"""Which embedding model search and new embeddings use: the choice `qpipe reembed` records.

Shared state, like the registry, and selected the same way (`concepts.base`): a JSON file under
$DAGSTER_HOME/qpipe on one host, or a PostgreSQL table (`postgres.PostgresActiveModel`) when
QPIPE_CONCEPTS_URL is set, so every host searches the same collection. The contract, run on both
backends in qpipe_dagster_tests/pipeline/test_active_model_contract.py: `get` is None until a
choice is recorded, `set` replaces it whole (a reader never sees half of one), and a damaged
stored value is an ActiveModelError naming where it is stored and how to fix it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from qpipe_dagster.concepts.model import RegistryError

FIX = (
    "record a good one with `qpipe reembed --model NAME [--truncate-dim N]`, or {reset} to go "
    "back to the default model"
)


class ActiveModelError(RegistryError):
    """The stored choice cannot be used; the message names where it is stored and the fix."""


@dataclass(frozen=True)
class ModelChoice:
    """A sentence-transformers model name (or local path) and its Matryoshka truncation."""

    name: str
    truncate_dim: int | None = None


def choice_problem(name: object, truncate_dim: object) -> str | None:
    """Why (name, truncate_dim) is not a usable choice, or None."""
    if not isinstance(name, str) or not name.strip():
        return f"name {name!r} is not a non-empty string"
    if truncate_dim is not None and (type(truncate_dim) is not int or truncate_dim < 1):
        return f"truncate_dim {truncate_dim!r} is not a whole number >= 1"
    return None


def checked(choice: ModelChoice) -> ModelChoice:
    """`choice` if it can be recorded; a bad one is refused before anything is written."""
    why = choice_problem(choice.name, choice.truncate_dim)
    if why:
        raise ActiveModelError(f"cannot record the active model: {why}")
    return choice


class ActiveModelStore(Protocol):
    """Where the active-model choice lives; `where` is what messages name."""

    where: str

    def get(self) -> ModelChoice | None:
        """The recorded choice, None when none was recorded (the default model applies)."""
        ...

    def set(self, choice: ModelChoice) -> None:
        """Replace the recorded choice at once: a reader sees the old one or the new one."""
        ...


class FileActiveModel:
    """The choice as $DAGSTER_HOME/qpipe/active_model.json, the format qpipe has always used."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)

    def get(self) -> ModelChoice | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ActiveModelError(
                f"{self.path} is not a valid model choice (unreadable: {exc}); "
                + FIX.format(reset="delete the file")
            ) from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or "name" not in data:
                raise ValueError('not a JSON object with a "name"')
        except ValueError as exc:
            raise ActiveModelError(
                f"{self.path} is not a valid model choice ({exc}; it holds {text[:80]!r}); "
                + FIX.format(reset="delete the file")
            ) from None
        why = choice_problem(data["name"], data.get("truncate_dim"))
        if why:
            raise ActiveModelError(
                f"{self.path} is not a valid model choice ({why}); "
                + FIX.format(reset="delete the file")
            )
        return ModelChoice(data["name"], data.get("truncate_dim"))

    def set(self, choice: ModelChoice) -> None:
        """Write a temporary file beside it, then rename it over the old one (atomic)."""
        checked(choice)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(choice)), encoding="utf-8")
        os.replace(tmp, self.path)
