"""Per-concept budgets: the most pages one concept run may crawl and the most compute seconds
it may spend. A run over either fails naming the budget, the measured figure and the fix.

QPIPE_BUDGET_MAX_PAGES (default 500) bounds a crawl before it starts: a launchpad `max_pages`
over it is refused, so a typo cannot crawl a whole site. QPIPE_BUDGET_MAX_COMPUTE_S (default
3600) bounds the time the run's steps have spent so far (from the run's start), checked after
each expensive step. What earlier steps stored stays stored: nothing accepted is lost, and the
run can be retried with a larger budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from qpipe_dagster.settings import env_int

DEFAULT_MAX_PAGES = 500
DEFAULT_MAX_COMPUTE_S = 3600


class BudgetExceeded(RuntimeError):
    """A concept run went over its budget; the message names the variable to raise."""


@dataclass(frozen=True)
class Budget:
    max_pages: int = DEFAULT_MAX_PAGES
    max_compute_s: int = DEFAULT_MAX_COMPUTE_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Budget:
        pages = env_int("QPIPE_BUDGET_MAX_PAGES", 1, 1_000_000, env)
        seconds = env_int("QPIPE_BUDGET_MAX_COMPUTE_S", 1, 30 * 86_400, env)
        return cls(
            DEFAULT_MAX_PAGES if pages is None else pages,
            DEFAULT_MAX_COMPUTE_S if seconds is None else seconds,
        )

    def check_pages(self, concept: str, requested: int, crawled: int | None = None) -> None:
        if requested > self.max_pages:
            raise BudgetExceeded(
                f"concept {concept!r}: crawl max_pages={requested} is over the per-concept budget"
                f" QPIPE_BUDGET_MAX_PAGES={self.max_pages}: lower max_pages in the run config or"
                " raise QPIPE_BUDGET_MAX_PAGES"
            )
        if crawled is not None and crawled > self.max_pages:
            raise BudgetExceeded(
                f"concept {concept!r}: {crawled} pages crawled, over the per-concept budget"
                f" QPIPE_BUDGET_MAX_PAGES={self.max_pages}; the rows are kept, later steps do not"
                " run: raise QPIPE_BUDGET_MAX_PAGES to process them"
            )

    def check_compute(self, concept: str, step: str, spent_s: float) -> None:
        if spent_s > self.max_compute_s:
            raise BudgetExceeded(
                f"concept {concept!r}: the run has spent {spent_s:.0f} s by the end of {step},"
                f" over the per-concept budget QPIPE_BUDGET_MAX_COMPUTE_S={self.max_compute_s};"
                f" what {step} and earlier steps stored is kept: raise"
                " QPIPE_BUDGET_MAX_COMPUTE_S and materialize the rest again"
            )
