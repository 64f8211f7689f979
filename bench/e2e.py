"""Concept throughput end to end: signed delivery -> run success -> pages searchable.

Starts `make run`'s stack (`python -m qpipe_dagster.devstack`) on free ports with a temporary
DAGSTER_HOME, serves a site per concept on loopback (the 61 dev-set articles from
`../shared/data/articles`, `--pages` of them per concept, their links neutralised so the page
count is exact; the demo site when that folder is absent), then:

1. `--single` concepts one after another on the idle stack (submit -> searchable, the latency a
   trader feels);
2. a burst of `--concepts` concepts submitted together through the receiver, signed as QStash
   signs them.

Per concept: submit -> run success, submit -> searchable (the vector store holds the concept's
chunks and a query filtered to it returns them), and the stage compute its assets report as
`stage_seconds` metadata (fetch, extract, encode, sweep, upsert: the work inside each step).
For the burst: concepts per hour, CPU seconds per concept and the stack's peak RSS (every
process of the stack's session, sampled), and efficiency = stage compute / wall time per
concept. The anchor is the stage compute itself: efficiency 1.0 means no overhead at all.
`efficiency_uncontended` uses the single runs' stage compute instead (the first single run is left
out when there are more: it may include the warm worker's load), since steps that share the cores
in a burst count their waiting as stage time.
Last line: one JSON object.

    .venv/bin/python bench/e2e.py [--concepts 20] [--single 3] [--pages 12] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.loopback_site import serve_routes  # noqa: E402
from qpipe_dagster.concepts import slugify  # noqa: E402
from qpipe_dagster_tests.e2e.stack import DevStack, free_port  # noqa: E402

DEFAULT_ARTICLES = REPO_ROOT.parent / "shared" / "data" / "articles"
_LINK = re.compile(rb"<a(\s[^>]*?)\shref=", re.I)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# --- the site ----------------------------------------------------------------------------------


def article_pages(folder: Path) -> list[bytes]:
    """The dev-set pages with their <a href> disabled, so a concept's page count is exact."""
    files = sorted((folder / "html").glob("*.html.gz")) if folder.is_dir() else []
    return [_LINK.sub(rb"<a\1 data-href=", gzip.decompress(f.read_bytes())) for f in files]


def serve_sites(
    pages: list[bytes], concepts: int, per_concept: int
) -> tuple[ThreadingHTTPServer, str]:
    """`/c<i>/` is concept i's index, linking `per_concept - 1` article pages (rotating)."""
    routes: dict[str, bytes] = {}
    for i in range(concepts):
        links = []
        for j in range(per_concept - 1):
            path = f"/c{i}/p{j}.html"
            routes[path] = pages[(i * per_concept + j) % len(pages)]
            links.append(f'<li><a href="{path}">article {j}</a></li>')
        routes[f"/c{i}/"] = (
            f"<html><head><title>concept {i}</title></head><body><h1>Concept {i}</h1>"
            f"<ul>{''.join(links)}</ul></body></html>"
        ).encode()

    server, base = serve_routes(routes)
    return server, base.rstrip("/")


# --- the stack's processes ---------------------------------------------------------------------


def session_processes(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # field 6 of stat: session id
                pids.append(int(entry))
    return pids


def cpu_and_rss(sid: int) -> tuple[float, float]:
    """CPU seconds of every process of the session, with their reaped children; RSS in MB."""
    cpu = rss = 0.0
    for pid in session_processes(sid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu += sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
        rss += int(fields[21]) * PAGE_SIZE / 1e6
    return cpu, rss


@dataclass
class Sampler:
    sid: int
    peak_rss_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak_rss_mb = max(self.peak_rss_mb, cpu_and_rss(self.sid)[1])

    def stop(self) -> None:
        self._stop.set()


# --- one concept -------------------------------------------------------------------------------


@dataclass
class Trace:
    name: str
    slug: str
    url: str
    message_id: str = ""
    submitted: float = 0.0
    succeeded: float | None = None
    searchable: float | None = None
    status: str = "pending"
    stage_s: float = 0.0
    error: str = ""
    submitted_wall: float = 0.0
    timeline: dict[str, float] = field(default_factory=dict)
    warm: bool = False  # its run forked from the warm worker (qpipe/warm_worker tag)

    def row(self) -> dict:
        def since(t: float | None) -> float | None:
            return None if t is None else round(t - self.submitted, 2)

        return {
            "concept": self.slug,
            "status": self.status,
            "success_s": since(self.succeeded),
            "searchable_s": since(self.searchable),
            "stage_s": round(self.stage_s, 2),
            "warm": self.warm,
            **({"error": self.error} if self.error else {}),
        }


class Observer:
    """Reads the stack's instance and store from this process (read-only), like the CLI does."""

    def __init__(self, home: Path) -> None:
        os.environ["DAGSTER_HOME"] = str(home)
        from dagster import DagsterInstance

        from qpipe_dagster.defs.resources import default_resources

        self.instance = DagsterInstance.get()
        resources = default_resources()
        self.encoder = resources["embedder"].encoder()
        self._vector_store = resources["vector_store"]
        self._query = self.encoder.encode(["market news"])[0]

    def run_of(self, message_id: str):  # -> RunRecord | None
        from dagster import RunsFilter

        records = self.instance.get_run_records(
            RunsFilter(tags={"qpipe/message_id": message_id}), limit=1
        )
        return records[0] if records else None

    def searchable(self, slugs: list[str]) -> set[str]:
        """Which of these concepts a query filtered to them finds (one store open per poll)."""
        try:
            store = self._vector_store.open(
                model=self.encoder.model_id, dim=self.encoder.dim, create=False
            )
        except Exception:  # no collection yet: nothing is searchable
            return set()
        try:
            return {s for s in slugs if store.search(self._query, k=1, concept=s)}
        finally:
            store.close()

    def failure(self, run_id: str) -> str:
        """The first failed step and its error, or the run's failure message."""
        from dagster import DagsterEventType

        for kind in (DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE):
            for record in self.instance.all_logs(run_id, of_type=kind):
                event = record.dagster_event
                if event is None:
                    continue
                data = event.event_specific_data
                error = getattr(data, "error", None)
                text = error.message if error is not None else event.message or ""
                return f"{event.step_key or 'run'}: {text.strip()[:300]}"
        return "no failure event recorded"

    def timeline(self, run_id: str, submitted_wall: float) -> dict[str, float]:
        """Where a run's wall time went: delivery -> run created (receiver + sensor), queued,
        worker start, each step, the gaps between steps and the run's end."""
        from dagster import DagsterEventType as E

        record = self.run_of_id(run_id)
        marks: dict[str, float] = {}
        steps: dict[str, list[float]] = {}
        for entry in self.instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None:
                continue
            kind = event.event_type
            if kind in (E.RUN_STARTING, E.RUN_START, E.RUN_SUCCESS, E.RUN_FAILURE):
                marks.setdefault(kind.value, entry.timestamp)
            elif kind == E.STEP_START and event.step_key:
                steps.setdefault(event.step_key, [entry.timestamp, entry.timestamp])
            elif kind in (E.STEP_SUCCESS, E.STEP_FAILURE) and event.step_key in steps:
                steps[event.step_key][1] = entry.timestamp
        created = record.create_timestamp.timestamp() if record else submitted_wall
        out = {"to_run_created": created - submitted_wall}
        starting = marks.get(E.RUN_STARTING.value, created)
        started = marks.get(E.RUN_START.value, starting)
        out["queued"] = starting - created
        out["worker_start"] = started - starting
        last = started
        for key, (begin, end) in sorted(steps.items(), key=lambda kv: kv[1][0]):
            out["gap_before_" + key] = begin - last
            out["step_" + key] = end - begin
            last = end
        finished = marks.get(E.RUN_SUCCESS.value, marks.get(E.RUN_FAILURE.value, last))
        out["run_end"] = finished - last
        return {k: round(v, 2) for k, v in out.items()}

    def run_of_id(self, run_id: str):  # -> RunRecord | None
        from dagster import RunsFilter

        records = self.instance.get_run_records(RunsFilter(run_ids=[run_id]), limit=1)
        return records[0] if records else None

    def stage_seconds(self, run_id: str) -> float:
        from dagster import DagsterEventType

        total = 0.0
        for record in self.instance.all_logs(
            run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
        ):
            mat = record.dagster_event.step_materialization_data.materialization  # type: ignore[union-attr]
            value = mat.metadata.get("stage_seconds")
            total += float(value.value) if value is not None else 0.0
        return total


def submit(stack: DevStack, trace: Trace) -> None:
    from qpipe_dagster.qstash.local import deliver_locally, new_message_id
    from webhook_sensor.settings import DEV_CURRENT_SIGNING_KEY

    body = json.dumps({"concept": trace.name, "urls": [trace.url], "symbol": "BTC-USD"}).encode()
    trace.message_id = new_message_id()
    trace.submitted = time.monotonic()
    trace.submitted_wall = time.time()
    deliver_locally(
        stack.receiver_url, body, signing_key=DEV_CURRENT_SIGNING_KEY, message_id=trace.message_id
    )


def follow(observer: Observer, traces: list[Trace], timeout: float) -> None:
    """Poll until every concept's run ended and its pages are searchable (or the timeout)."""
    deadline = time.monotonic() + timeout
    from dagster import DagsterRunStatus

    done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    while time.monotonic() < deadline:
        open_ = [t for t in traces if t.status == "pending" or t.searchable is None]
        if not open_:
            return
        now = time.monotonic()
        found = observer.searchable([t.slug for t in open_ if t.searchable is None])
        for t in open_:
            if t.slug in found:
                t.searchable = now
            record = observer.run_of(t.message_id) if t.status == "pending" else None
            if record is not None and record.dagster_run.status in done:
                t.status = record.dagster_run.status.value.lower()
                t.succeeded = now if t.status == "success" else None
                t.stage_s = observer.stage_seconds(record.dagster_run.run_id)
                t.warm = "qpipe/warm_worker" in record.dagster_run.tags
                t.timeline = observer.timeline(record.dagster_run.run_id, t.submitted_wall)
                if t.status != "success":
                    t.error = observer.failure(record.dagster_run.run_id)
                if t.status != "success" and t.searchable is None:
                    t.searchable = float("nan")  # never will be: stop waiting for it
        time.sleep(0.5)
    for t in traces:
        if t.status == "pending":
            t.status = "timeout"


def pct(values: list[float], q: float) -> float | None:
    values = sorted(v for v in values if v == v)
    if not values:
        return None
    return round(values[min(len(values) - 1, round(q * (len(values) - 1)))], 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concepts", type=int, default=20, help="burst size (default 20)")
    ap.add_argument("--single", type=int, default=3, help="concepts run alone first (default 3)")
    ap.add_argument("--pages", type=int, default=12, help="pages per concept (default 12)")
    ap.add_argument("--articles", type=Path, default=DEFAULT_ARTICLES)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds for the burst")
    args = ap.parse_args()
    if args.concepts < 1 or args.single < 0 or args.pages < 1:
        ap.error("--concepts and --pages must be at least 1, --single at least 0")

    # `kill` or a CI timeout stops the stack too (the finally below), as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pages = article_pages(args.articles)
    total = args.single + args.concepts
    with tempfile.TemporaryDirectory(prefix="qpipe-bench-e2e-") as tmp:
        home = Path(tmp) / "home"
        stack = DevStack(
            home=home,
            host="127.0.0.1",
            ui_port=free_port(),
            demo_port=free_port(),
            receiver_port=free_port(),
            log_path=Path(tmp) / "stack.log",
        ).start(timeout=300)
        server = None
        try:
            if pages:
                server, base = serve_sites(pages, total, args.pages)
                site = f"{len(pages)} dev-set articles, {args.pages} pages per concept"
                urls = [f"{base}/c{i}/" for i in range(total)]
            else:
                site = "the demo site (articles folder not found)"
                urls = [stack.demo_url] * total
            print(f"site: {site}", file=sys.stderr)
            assert stack.proc is not None
            sid = os.getsid(stack.proc.pid)
            observer = Observer(home)
            stamp = int(time.time())
            traces = [
                Trace(name=(name := f"bench e2e {stamp} {i}"), slug=slugify(name), url=urls[i])
                for i in range(total)
            ]
            single = traces[: args.single]
            burst = traces[args.single :]
            for t in single:
                submit(stack, t)
                follow(observer, [t], timeout=600)
                print(f"single: {t.row()}", file=sys.stderr)
                print(f"  timeline: {t.timeline}", file=sys.stderr)

            sampler = Sampler(sid)
            cpu0, _ = cpu_and_rss(sid)
            t0 = time.monotonic()
            for t in burst:
                submit(stack, t)
            follow(observer, burst, args.timeout)
            ended = [
                t.searchable
                for t in burst
                if t.searchable is not None and t.searchable == t.searchable
            ]
            wall = (max(ended) if ended else time.monotonic()) - t0
            cpu1, _ = cpu_and_rss(sid)
            sampler.stop()
            for t in burst:
                print(f"burst: {t.row()}", file=sys.stderr)
        finally:
            stack.stop()
            if server is not None:
                server.shutdown()

    ok = [t for t in burst if t.status == "success" and t.searchable is not None]
    searchable = [t.searchable - t.submitted for t in ok if t.searchable == t.searchable]
    stage_total = sum(t.stage_s for t in ok)
    # each concept's stage compute as measured alone: the single runs' p50, the first left out
    # when there are more (it may include the warm worker's load)
    idle_stage = pct([t.stage_s for t in single[1:] or single if t.status == "success"], 0.5)
    result = {
        "bench": "e2e",
        "site": site,
        "concepts": args.concepts,
        "pages_per_concept": args.pages if pages else None,
        "succeeded": len(ok),
        "failed": [t.row() for t in burst if t not in ok],
        "wall_s": round(wall, 1),
        "concepts_per_hour": round(len(ok) * 3600 / wall, 1) if ok else 0.0,
        "p50_s": pct(searchable, 0.5),
        "p95_s": pct(searchable, 0.95),
        "single_p50_s": pct(
            [t.searchable - t.submitted for t in single if t.searchable is not None], 0.5
        ),
        "single_success_p50_s": pct(
            [t.succeeded - t.submitted for t in single if t.succeeded is not None], 0.5
        ),
        "stage_s_per_concept": round(stage_total / len(ok), 2) if ok else None,
        "efficiency": round(stage_total / wall, 3) if ok and stage_total else None,
        "efficiency_uncontended": (
            round(idle_stage * len(ok) / wall, 3) if ok and idle_stage else None
        ),
        "cpu_s_per_concept": round((cpu1 - cpu0) / max(1, len(ok)), 2),
        "warm_runs": sum(t.warm for t in burst),
        "peak_rss_mb": round(sampler.peak_rss_mb, 1),
        "cores": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0 if len(ok) == len(burst) else 1


if __name__ == "__main__":
    sys.exit(main())
