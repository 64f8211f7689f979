"""The warm-up compiles every cached kernel a concept run uses, so images and `make run` ship
with numba's cache full instead of compiling inside the first backtest step."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

from numba.core.registry import CPUDispatcher

from qpipe_dagster.backtest import kernels
from qpipe_dagster.trials import returns, stats

# Called from Python by a concept run: each is compiled (and cached) in its own right.
ENTRY = {
    "qpipe_dagster.backtest.kernels.sweep_kernel",
    "qpipe_dagster.backtest.kernels.equity_kernel",
    "qpipe_dagster.trials.returns._power_sums",
    "qpipe_dagster.trials.returns._returns",
    "qpipe_dagster.trials.stats._cscv_logits",
}
# Called only from other kernels: compiled into their callers, never on their own.
CALLEES = {
    "qpipe_dagster.backtest.kernels.running_sum",
    "qpipe_dagster.backtest.kernels.gain_loss_sums",
    "qpipe_dagster.backtest.kernels.simulate",
}


def _cached_kernels(*modules: ModuleType) -> dict[str, CPUDispatcher]:
    """Kernels defined in these modules with njit(cache=True), not inlined into callers."""
    return {
        f"{m.__name__}.{name}": obj
        for m in modules
        for name, obj in vars(m).items()
        if isinstance(obj, CPUDispatcher)
        and obj.py_func.__module__ == m.__name__
        and type(obj._cache).__name__ != "NullCache"
        and obj.targetoptions.get("inline") in (None, "never")
    }


def test_every_cached_kernel_is_classified() -> None:
    """A new kernel must be added to ENTRY (and warmed) or CALLEES."""
    assert set(_cached_kernels(kernels, returns, stats)) == ENTRY | CALLEES


def test_warm_compiles_every_entry_kernel() -> None:
    """In a fresh interpreter, so kernels other tests compiled here cannot hide a gap."""
    probe = (
        "import importlib; from qpipe_dagster.backtest.warm import warm; warm(bars=300)\n"
        f"for name in {sorted(ENTRY)!r}:\n"
        "    mod, _, attr = name.rpartition('.')\n"
        "    if not getattr(importlib.import_module(mod), attr).signatures: print(name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not done.stdout.split(), f"not compiled by backtest.warm: {done.stdout.split()}"
