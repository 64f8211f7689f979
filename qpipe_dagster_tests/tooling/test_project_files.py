"""The project's tooling files are what their tools accept, and run the Makefile's commands.

Schemas come from where they may: the GitHub workflow schema is the copy that
`check-jsonschema` (a dev dependency, from PyPI) vendors from SchemaStore; the devcontainer
spec's schema is published only in its repository, so that test reads it from
`../shared/data/devcontainer/devContainer.base.schema.json` (or `QPIPE_DEVCONTAINER_SCHEMA`)
and is skipped, saying so, without it. The file's own contract (it builds the project image
and runs `make install`) is always checked.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEVCONTAINER_SCHEMA = Path(
    os.environ.get("QPIPE_DEVCONTAINER_SCHEMA")
    or REPO.parent / "shared" / "data" / "devcontainer" / "devContainer.base.schema.json"
)


def _schema_text(name: str) -> str:
    if name == "github-workflow.json":
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
        return vendor.joinpath("github-workflows.json").read_text("utf-8")
    if not DEVCONTAINER_SCHEMA.is_file():
        pytest.skip(
            f"the devcontainer spec's schema is not at {DEVCONTAINER_SCHEMA} (set "
            "QPIPE_DEVCONTAINER_SCHEMA to devContainer.base.schema.json from devcontainers/spec)"
        )
    return DEVCONTAINER_SCHEMA.read_text("utf-8")


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads(_schema_text(name))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(validator: jsonschema.protocols.Validator, doc: object) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def _workflow() -> dict:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text("utf-8"))
    if True in doc:  # YAML 1.1 reads the bare key `on` as the boolean true
        doc["on"] = doc.pop(True)
    return doc


def _make_targets() -> dict[str, list[str]]:
    """Each Makefile rule's target and its prerequisites."""
    rules: dict[str, list[str]] = {}
    for line in (REPO / "Makefile").read_text("utf-8").splitlines():
        m = re.match(r"^([A-Za-z][\w-]*):(?!=)([^#]*)", line)
        if m:
            rules[m.group(1)] = m.group(2).split()
    return rules


def _devcontainer() -> dict:
    return json.loads((REPO / ".devcontainer" / "devcontainer.json").read_text("utf-8"))


def test_devcontainer_matches_the_spec_schema() -> None:
    assert _errors(_validator("devContainer.base.schema.json"), _devcontainer()) == []


def test_devcontainer_builds_the_project_image_and_installs() -> None:
    doc = _devcontainer()
    dockerfile = (REPO / ".devcontainer" / doc["build"]["dockerfile"]).resolve()
    assert dockerfile == REPO / "Dockerfile"
    assert (REPO / ".devcontainer" / doc["build"]["context"]).resolve() == REPO
    assert doc["postCreateCommand"] == "make install"


def test_devcontainer_schema_refuses_a_broken_file() -> None:
    """The check has teeth: a wrong type and an unknown key are both reported."""
    errors = _errors(
        _validator("devContainer.base.schema.json"),
        {"build": {"dockerfile": 3}, "postCreateComand": "make install"},
    )
    assert errors


def test_ci_workflow_is_valid_and_runs_make_test_on_the_matrix() -> None:
    doc = _workflow()
    assert _errors(_validator("github-workflow.json"), doc) == []
    job = doc["jobs"]["test"]
    assert job["runs-on"].startswith("ubuntu")
    assert job["strategy"]["matrix"]["python-version"] == ["3.11", "3.12"]
    uses = {step.get("uses", "").split("@")[0]: step for step in job["steps"]}
    assert uses["actions/setup-node"]["with"]["node-version"] == 20
    assert "${{ matrix.python-version }}" in uses["actions/setup-python"]["with"]["python-version"]
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert any(re.match(r"make test(\s|$)", r) for r in runs), runs


def test_workflow_schema_refuses_a_broken_workflow() -> None:
    broken = {"on": "push", "jobs": {"t": {"runs-on": "ubuntu-latest", "stepz": []}}}
    assert _errors(_validator("github-workflow.json"), broken)


def test_make_test_runs_lint_and_typecheck() -> None:
    rules = _make_targets()
    assert {"lint", "typecheck"} <= set(rules["test"]), rules["test"]


@pytest.mark.parametrize("hook", ["lint", "typecheck"])
def test_pre_commit_hooks_run_the_make_targets(hook: str) -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text("utf-8"))
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert hooks[hook]["entry"] == f"make {hook}"
    assert hooks[hook]["language"] == "system"
    assert hook in _make_targets()
