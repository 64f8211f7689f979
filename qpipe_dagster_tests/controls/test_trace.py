"""`qpipe trace` end to end: a signed delivery through the real receiver into the inbox, the real
qstash_inbox_sensor, the run it requests executed on a real instance in a temporary
DAGSTER_HOME (real Scrapy on a loopback site, the real model, LanceDB), then the trace by
message id and by concept, and `qpipe search --json` naming the same run and message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from dagster import AssetKey, DagsterInstance, build_sensor_context

from qpipe_dagster.cli import main as qpipe
from qpipe_dagster.definitions import defs
from qpipe_dagster_tests.webhook_sensor.conftest import CURRENT, make_token, start_receiver

pytestmark = pytest.mark.slow

KNOWLEDGE = ("crawled_pages", "parsed_pages", "page_embeddings", "weaviate_objects")


def _tick(instance: DagsterInstance, cursor: str | None):
    """Evaluate the shipped sensor as the daemon does and apply its partition requests."""
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def("qstash_inbox_sensor")
    with build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), cursor=cursor, repository_def=repo
    ) as ctx:
        data = sensor.evaluate_tick(ctx)
    for req in data.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return data


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict | list:
    code = qpipe(list(argv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_trace_follows_a_delivery_to_its_objects(
    dagster_home: Path,
    demo_site: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base_url, _ = demo_site
    monkeypatch.setenv("MAX_CONCEPTS_PER_DAY", "1")  # the second concept waits for tomorrow
    clock = time_machine.travel(datetime(2026, 11, 23, 12, tzinfo=UTC), tick=True)
    clock.start()
    try:
        server, receiver = start_receiver(
            tmp_path, inbox_path=dagster_home / "qpipe" / "inbox.sqlite"
        )
        body = json.dumps({"concept": "Trace Demo", "urls": [base_url + "index.html"]}).encode()
        other = json.dumps({"concept": "Later Idea", "urls": [base_url + "index.html"]}).encode()
        with server:
            # QStash's third attempt is the first one stored (it retried twice before) ...
            token = make_token(CURRENT, receiver.url, body)
            stored = receiver.post(body, token, "msg_trace", **{"Upstash-Retried": "2"})
            assert stored.status_code == 200, stored.text
            # ... and it delivers it once more (a lost acknowledgement)
            assert receiver.signed(body, message_id="msg_trace").status_code == 200
            assert receiver.signed(other, message_id="msg_later").status_code == 200

        with DagsterInstance.get() as instance:
            first = _tick(instance, None)
            [request] = first.run_requests
            assert request.run_key == "msg_trace"
            job = defs.resolve_job_def("concept_pipeline")
            result = job.execute_in_process(
                partition_key=request.partition_key,
                instance=instance,
                tags=request.tags,
                asset_selection=[AssetKey(a) for a in KNOWLEDGE],
            )
            assert result.success
            run_id = result.run_id
            _tick(instance, first.cursor)  # marks the requested message consumed
    finally:
        clock.stop()

    by_message = _json(capsys, "trace", "msg_trace", "--json")
    assert isinstance(by_message, dict)
    assert by_message["kind"] == "message" and by_message["concept"] == "trace-demo"
    [delivery] = by_message["deliveries"]
    assert delivery["deliveries"] == 2 and delivery["qstash_retried"] == 2
    assert delivery["status"] == "consumed"
    # the receiver's inbox writer is its own process: its clock is the real one
    received = datetime.fromisoformat(delivery["received_at"])
    assert received <= datetime.fromisoformat(delivery["last_delivery_at"])
    assert delivery["decision"] == f"run requested (run key msg_trace): {run_id}"
    [run] = by_message["runs"]
    assert run["run_id"] == run_id and run["status"] == "SUCCESS"
    assert run["trigger"] == "qstash" and run["message_id"] == "msg_trace"
    assert {s["step"]: s["status"] for s in run["steps"]} == dict.fromkeys(KNOWLEDGE, "SUCCESS")
    produced = run["produced"]
    assert produced["crawled_pages"]["pages_ok"] == 12
    chunks = produced["page_embeddings"]["chunks"]
    assert produced["weaviate_objects"]["inserted"] == chunks >= 12
    assert run["objects_in_store"] == chunks  # every stored object names this run
    assert by_message["store"]["objects_by_run"] == {run_id: chunks}

    # the deferred delivery: no run, and why
    later = _json(capsys, "trace", "msg_later", "--json")
    assert isinstance(later, dict) and later["runs"] == []
    assert later["deliveries"][0]["decision"].startswith(
        "deferred: the daily cap of new concepts (MAX_CONCEPTS_PER_DAY) was reached on 2026-11-23"
    )

    # by concept: the same delivery, run and objects; the screen says it in words
    by_concept = _json(capsys, "trace", "trace-demo", "--json")
    assert isinstance(by_concept, dict) and by_concept["kind"] == "concept"
    assert [r["run_id"] for r in by_concept["runs"]] == [run_id]
    assert [d["message_id"] for d in by_concept["deliveries"]] == ["msg_trace"]
    assert qpipe(["trace", "trace-demo"]) == 0
    screen = capsys.readouterr().out
    assert f"sensor: run requested (run key msg_trace): {run_id}" in screen
    assert "redelivered 1x; QStash had retried 2x before it was stored" in screen
    assert f"{chunks} objects in the store name it" in screen
    assert "step weaviate_objects: SUCCESS" in screen

    # search hits name the run and the message that stored them
    hits = _json(capsys, "search", "halving block subsidy", "--concept", "trace-demo", "--json")
    assert isinstance(hits, list) and hits
    assert {(h["run_id"], h["message_id"]) for h in hits} == {(run_id, "msg_trace")}

    # an unknown id or concept: a clear error and exit code 2
    assert qpipe(["trace", "msg_nobody"]) == 2
    err = capsys.readouterr().err
    assert "no QStash message or concept 'msg_nobody': not in the inbox" in err
    assert qpipe(["trace", "  "]) == 2
    assert "give a QStash message id or a concept slug" in capsys.readouterr().err
