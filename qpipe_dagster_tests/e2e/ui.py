"""What a user does in the Dagster 1.13 UI, as small functions over a Playwright page.

Selectors are roles and visible text (the UI's CSS class names are build hashes); the one
exception is the lineage graph, whose edges are bare SVG paths, read by geometry instead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, expect

# Reads the asset graph as drawn: each asset node is an SVG foreignObject (groups carry class
# "group") whose text starts with the asset name, in both the detailed and the zoomed-out minimal
# rendering; each edge is a path from one node's right side to the next node's left side (arrow
# marker just short of it). Returns {"nodes": {name: text}, "edges": [[a, b]]}, null for a
# node that is not one of `names`.
_GRAPH_JS = """
(names) => {
  const boxes = {};
  const texts = {};
  const byLength = [...names].sort((a, b) => b.length - a.length);
  for (const fo of document.querySelectorAll('svg foreignObject')) {
    if (fo.classList.contains('group')) continue;
    const text = (fo.textContent || '').trim();
    // A long name is drawn cut in the middle ("strategy…endations"): head and tail must fit.
    const cut = text.indexOf('\u2026');
    const fits = (n) => {
      if (text.startsWith(n)) return true;
      if (cut <= 0 || !n.startsWith(text.slice(0, cut))) return false;
      const rest = text.slice(cut + 1);
      for (let j = cut; j <= n.length - 3; j++) if (rest.startsWith(n.slice(j))) return true;
      return false;
    };
    const name = byLength.find(fits);
    if (name && !(name in boxes)) {
      boxes[name] = {x: +fo.getAttribute('x'), y: +fo.getAttribute('y'),
                     w: +fo.getAttribute('width'), h: +fo.getAttribute('height')};
      texts[name] = text;
    }
  }
  const near = (b, px, py, tol) =>
    px >= b.x - tol && px <= b.x + b.w + tol && py >= b.y - tol && py <= b.y + b.h + tol;
  const owner = (px, py) => {
    const hits = Object.entries(boxes).filter(([, b]) => near(b, px, py, 12));
    return hits.length === 1 ? hits[0][0] : null;
  };
  const edges = [];
  for (const p of document.querySelectorAll('svg path[marker-end]')) {
    const nums = (p.getAttribute('d') || '').match(/-?\\d+(\\.\\d+)?/g);
    if (!nums || nums.length < 4) continue;
    const [x1, y1] = [+nums[0], +nums[1]];
    const [x2, y2] = [+nums[nums.length - 2], +nums[nums.length - 1]];
    edges.push([owner(x1, y1), owner(x2, y2)]);
  }
  return {nodes: texts, edges};
}
"""


class Shots:
    """Numbered screenshots of each step, so a failure can be read off the artefacts."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page, self.folder, self.n = page, folder, 0

    def take(self, name: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Screenshot after the step; on failure, screenshot and dump the page as FAILED-<name>."""
        try:
            yield
        except BaseException:
            try:
                self.take(f"FAILED-{name}")
                (self.folder / f"FAILED-{name}.html").write_text(self.page.content())
            except PlaywrightError:
                pass
            raise
        self.take(name)


def dismiss_community_dialog(page: Page) -> None:
    """Dagster OSS greets a new browser profile with a newsletter modal; a user clicks Skip."""
    skip = page.get_by_role("dialog").get_by_role("button", name="Skip", exact=True)
    try:
        skip.wait_for(timeout=5_000)
    except PlaywrightError:
        return
    skip.click()
    expect(skip).to_be_hidden()


def open_lineage(page: Page, ui_url: str) -> None:
    page.goto(f"{ui_url}/asset-groups")
    dismiss_community_dialog(page)
    expect(page.get_by_role("button", name="Materialize all…")).to_be_visible()


def open_job(page: Page, ui_url: str, job: str, location: str = "qpipe") -> None:
    """A job's page: its asset graph with a Materialize button scoped to the job's assets."""
    page.goto(f"{ui_url}/locations/{location}/jobs/{job}")
    dismiss_community_dialog(page)
    expect(page.get_by_role("button", name="Materialize all…")).to_be_visible()


def expand_all_groups(page: Page) -> None:
    """Groups start collapsed; the graph's settings menu has "Expand all groups"."""
    page.get_by_role("button", name="settings", exact=True).click()
    item = page.get_by_role("menuitem", name=re.compile("Expand all groups"))
    if item.count():
        item.click()
    page.keyboard.press("Escape")  # close the menu (it stays open after a choice)
    expect(item).to_be_hidden()


def read_graph(page: Page, names: list[str], timeout_s: float = 30.0) -> dict:
    """Poll the drawn graph until all nodes are there and two reads agree (edges draw last)."""
    deadline = time.monotonic() + timeout_s
    previous: dict | None = None
    graph: dict = {}
    while time.monotonic() < deadline:
        graph = page.evaluate(_GRAPH_JS, names)
        complete = set(graph["nodes"]) == set(names) and graph["edges"]
        if complete and graph == previous:
            return graph
        previous = graph
        page.wait_for_timeout(500)
    return graph


def launch_partition_run(
    page: Page,
    partition: str,
    asset_count: int,
    before_launch: Callable[[], object] | None = None,
) -> str:
    """Materialize all…, pick one partition, launch; return the run id from the toast."""
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"materialize {asset_count} assets")).to_be_visible()
    expect(dialog.get_by_text("Partition selection")).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    option = page.get_by_role("menuitem").filter(has=page.get_by_text(partition, exact=True))
    option.first.click()
    page.keyboard.press("Escape")  # close the partition picker, not the dialog
    expect(page.get_by_placeholder("Filter partitions")).to_be_hidden()
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    launch = dialog.get_by_role("button", name="Launch 1 run", exact=True)
    expect(launch).to_be_enabled()
    if before_launch is not None:
        before_launch()
    launch.click()
    link = page.get_by_role("link", name="View", exact=True).and_(page.locator('[href*="/runs/"]'))
    expect(link.first).to_be_visible()
    link = link.first
    href = link.get_attribute("href") or ""
    match = re.search(r"/runs/([0-9a-f-]{36})", href)
    assert match, f"the launch toast links to {href!r}, not to a run"
    return match.group(1)


def wait_for_run_status(page: Page, ui_url: str, run_id: str, timeout_s: float) -> str:
    """Open the run page and wait for its status badge to reach Success (or fail fast)."""
    page.goto(f"{ui_url}/runs/{run_id}")
    expect(page.get_by_text(run_id[:8], exact=True).first).to_be_visible()
    badge = page.get_by_text(
        re.compile(r"^(Queued|Starting|Started|Success|Failure|Canceled|Canceling)$")
    )
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        if badge.count():
            status = badge.first.inner_text().strip()
            if status in {"Success", "Failure", "Canceled"}:
                return status
        page.wait_for_timeout(1_000)
    return status or "unknown"


def metadata_row(page: Page, key: str) -> Locator:
    return page.get_by_role("row").filter(has=page.get_by_text(key, exact=True))


def metadata_value(page: Page, key: str) -> str:
    row = metadata_row(page, key)
    expect(row).to_have_count(1)
    return row.get_by_role("cell").last.inner_text().strip()


def open_markdown(page: Page, key: str) -> Locator:
    """Click a markdown metadata entry's "[Show Markdown]" and return the dialog it opens."""
    metadata_row(page, key).get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog").filter(has_text=key)
    expect(dialog).to_be_visible()
    return dialog


def close_dialog(page: Page, dialog: Locator) -> None:
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()


def open_asset(page: Page, ui_url: str, asset: str) -> None:
    page.goto(f"{ui_url}/assets/{asset}")
    dismiss_community_dialog(page)
    expect(page.get_by_role("tab", name="Overview")).to_be_visible()
    expect(page.get_by_text("Definition", exact=True).first).to_be_visible()


def exact_text(page: Page, text: str) -> Locator:
    """Visible text equal to `text`, ignoring case (kinds render as "PyTorch", "Polars")."""
    return page.get_by_text(re.compile(rf"^\s*{re.escape(text)}\s*$", re.IGNORECASE)).first
