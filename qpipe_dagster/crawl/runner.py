"""Run a crawl and write the `crawled_pages` Arrow IPC file.

Scrapy's Twisted reactor can start only once per process and must never start inside
the Dagster process, so crawls run in a child: either through Dagster Pipes (the
`crawled_pages` asset uses `PipesSubprocessClient` with `pipes_command()`), or through
the plain CLI (`crawl_subprocess`, used by tests and the `qpipe` CLI).

    python -m qpipe_dagster.crawl.runner --seed https://example.com/ --out pages.arrow \
        [--settings-json '{"max_depth": 1}']
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from qpipe_dagster.crawl.schema import CRAWLED_PAGES_SCHEMA, SKIPPED_PREFIX
from qpipe_dagster.crawl.settings import CrawlSettings
from qpipe_dagster.crawl.urls import validate_seeds

__all__ = [
    "crawl_in_this_process",
    "crawl_subprocess",
    "main",
    "pipes_command",
    "pipes_extras",
    "read_crawled_pages",
    "summarize",
]

_PIPES_ENV = ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES")
_PROGRESS_EVERY = 25


def _check_inputs(seeds: Sequence[str], settings: CrawlSettings, out_path: Path) -> list[str]:
    """Validate everything before the crawl starts, so bad input costs no network time."""
    if not isinstance(settings, CrawlSettings):
        raise ValueError(f"settings must be a CrawlSettings, got {type(settings).__name__}")
    urls = validate_seeds(seeds)
    if len(urls) > settings.max_pages:
        raise ValueError(
            f"{len(urls)} seed URLs exceed max_pages={settings.max_pages}; "
            "raise max_pages or pass fewer seeds"
        )
    if not str(out_path).strip():
        raise ValueError("out_path is empty")
    if out_path.exists() and out_path.is_dir():
        raise ValueError(f"out_path {str(out_path)!r} is a directory, expected a file path")
    return urls


def summarize(table: pa.Table, duration_s: float) -> dict[str, Any]:
    """Counts for logs and Dagster metadata; skipped = deliberate (non-HTML, too large)."""
    errors = table.column("error").to_pylist()
    skipped = sum(1 for e in errors if e is not None and e.startswith(SKIPPED_PREFIX))
    ok = sum(1 for e in errors if e is None)
    html = table.column("html")
    return {
        "pages_ok": ok,
        "pages_failed": len(errors) - ok - skipped,
        "pages_skipped": skipped,
        "bytes": sum(len(b) for b in html.to_pylist() if b is not None),
        "duration_s": round(duration_s, 3),
    }


def _write_atomically(table: pa.Table, out_path: Path) -> None:
    """Write then rename, so a crash never leaves a truncated file readers would trust."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)


def crawl_in_this_process(
    seeds: Sequence[str],
    settings: CrawlSettings,
    out_path: Path,
    *,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict:
    """Crawl in the current process (starts the Twisted reactor: once per process only).

    Writes an Arrow IPC file with CRAWLED_PAGES_SCHEMA, rows sorted by url, and returns
    {"pages_ok", "pages_failed", "pages_skipped", "bytes", "duration_s"}.
    """
    out_path = Path(out_path)
    urls = _check_inputs(seeds, settings, out_path)

    from scrapy.crawler import CrawlerProcess  # heavy; keep `--help` and bad args fast

    from qpipe_dagster.crawl.spider import SiteSpider, scrapy_settings

    started = time.monotonic()
    process = CrawlerProcess(settings=scrapy_settings(settings))
    # An unreachable robots.txt is logged with a full traceback per host; the page's own
    # row already records the same failure, so keep stderr readable.
    logging.getLogger("scrapy.downloadermiddlewares.robotstxt").setLevel(logging.CRITICAL)
    crawler = process.create_crawler(SiteSpider)
    process.crawl(crawler, seeds=urls, crawl_settings=settings, on_row=on_row)
    process.start()
    spider = crawler.spider
    if not isinstance(spider, SiteSpider):  # None: the crawl never started
        raise RuntimeError("Scrapy did not start the crawl (see the log above)")
    table = pa.Table.from_pylist(spider.rows, schema=CRAWLED_PAGES_SCHEMA).sort_by("url")
    _write_atomically(table, out_path)
    return summarize(table, time.monotonic() - started)


def read_crawled_pages(path: Path) -> pa.Table:
    """Read a crawl output file, failing clearly if it is not a crawled_pages table."""
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{path}: not a readable Arrow IPC file ({exc})") from exc
    if not table.schema.equals(CRAWLED_PAGES_SCHEMA):
        raise ValueError(f"{path}: schema differs from CRAWLED_PAGES_SCHEMA:\n{table.schema}")
    return table


# -- child-process entry points -------------------------------------------------------


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _child_env() -> dict[str, str]:
    """Environment for a plain (non-Pipes) child that can import this package."""
    env = {k: v for k, v in os.environ.items() if k not in _PIPES_ENV}
    root = str(_repo_root())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def pipes_command(python: str = sys.executable) -> list[str]:
    """The command the `crawled_pages` asset hands to `PipesSubprocessClient.run`."""
    return [python, "-m", "qpipe_dagster.crawl.runner"]


def pipes_extras(seeds: Sequence[str], settings: CrawlSettings, out_path: Path) -> dict:
    """Pipes `extras` for the child; seeds are validated here so the asset fails fast."""
    urls = _check_inputs(seeds, settings, Path(out_path))
    return {"seeds": urls, "settings": settings.to_dict(), "out_path": str(out_path)}


def crawl_subprocess(
    seeds: Sequence[str],
    settings: CrawlSettings,
    out_path: Path,
    *,
    python: str = sys.executable,
    timeout_s: float | None = None,
) -> pa.Table:
    """Run the CLI form in a child process (no Pipes) and return the table it wrote."""
    out_path = Path(out_path)
    urls = _check_inputs(seeds, settings, out_path)
    cmd = [*pipes_command(python), "--out", str(out_path)]
    cmd += ["--settings-json", json.dumps(settings.to_dict())]
    cmd += [f"--seed={url}" for url in urls]
    try:
        proc = subprocess.run(
            cmd, env=_child_env(), capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise RuntimeError(
            f"crawl child exceeded timeout_s={timeout_s}; stderr tail:\n{tail}"
        ) from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"crawl child exited with code {proc.returncode}; stderr tail:\n{proc.stderr[-2000:]}"
        )
    return read_crawled_pages(out_path)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m qpipe_dagster.crawl.runner",
        description="Crawl seed URLs and write a crawled_pages Arrow IPC file.",
    )
    parser.add_argument("--seed", action="append", required=True, metavar="URL")
    parser.add_argument("--out", required=True, type=Path, metavar="PATH")
    parser.add_argument("--settings-json", default="{}", metavar="JSON")
    return parser.parse_args(argv)


def _settings_from_json(text: str) -> CrawlSettings:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--settings-json is not valid JSON: {exc}") from exc
    return CrawlSettings.from_dict(raw)


def _main_cli(argv: Sequence[str] | None) -> int:
    args = _parse_args(argv)  # exits 2 with a usage message on malformed arguments
    try:
        settings = _settings_from_json(args.settings_json)
        _check_inputs(args.seed, settings, args.out)
    except ValueError as exc:
        print(f"qpipe crawl: error: {exc}", file=sys.stderr)
        return 2
    summary = crawl_in_this_process(args.seed, settings, args.out)
    print(json.dumps(summary))
    return 0


def _extras_inputs(extras: Any) -> tuple[list[str], CrawlSettings, Path]:
    if not isinstance(extras, dict):
        raise ValueError(f"Pipes extras must be a dict, got {type(extras).__name__}")
    unknown = sorted(set(extras) - {"seeds", "settings", "out_path"})
    if unknown:
        raise ValueError(f"unknown Pipes extras key(s): {', '.join(unknown)}")
    for key in ("seeds", "out_path"):
        if key not in extras:
            raise ValueError(f"Pipes extras is missing {key!r}")
    out_path = extras["out_path"]
    if not isinstance(out_path, str):
        raise ValueError(f"Pipes extras out_path must be a string, got {out_path!r}")
    settings = CrawlSettings.from_dict(extras.get("settings") or {})
    seeds = extras["seeds"]
    _check_inputs(seeds, settings, Path(out_path))
    return seeds, settings, Path(out_path)


def _main_pipes() -> int:
    from dagster_pipes import open_dagster_pipes

    from qpipe_dagster.with_parent import die_with_parent

    die_with_parent()  # the step process that started this crawl may be killed: go with it
    with open_dagster_pipes() as pipes:
        # A ValueError here propagates: Pipes reports it to Dagster, which fails the step.
        seeds, settings, out_path = _extras_inputs(pipes.extras)
        pipes.log.info(f"crawling {len(seeds)} seed(s) with {settings.to_dict()}")
        count = 0

        def progress(row: dict[str, Any]) -> None:
            nonlocal count
            count += 1
            if count % _PROGRESS_EVERY == 0:
                pipes.log.info(f"crawled {count} URL(s); last {row['url']}")

        started = time.perf_counter()
        summary = crawl_in_this_process(seeds, settings, out_path, on_row=progress)
        # the fetch itself, without the child's start-up: bench/e2e.py's efficiency reads it
        stage_seconds = round(time.perf_counter() - started, 3)
        pipes.log.info(f"crawl finished: {summary}")
        # out_path is usually a temp file of the asset: not worth showing as metadata.
        pipes.report_asset_materialization(
            metadata={**summary, "rows": count, "stage_seconds": stage_seconds}
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Pipes mode when launched by Dagster Pipes, otherwise the argparse CLI."""
    from dagster_pipes import PipesEnvVarParamsLoader

    if argv is None and PipesEnvVarParamsLoader().is_dagster_pipes_process():
        return _main_pipes()
    return _main_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
