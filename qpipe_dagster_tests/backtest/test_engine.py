"""Backend choice: explicit argument, then $QPIPE_BACKEND, then auto with a recorded reason."""

from __future__ import annotations

import numpy as np
import pytest

from qpipe_dagster.backtest.engine import gpu_status, resolve_backend, run_ma_sweep
from qpipe_dagster_tests.backtest.helpers import assert_metrics_match, gbm_path

CLOSE = gbm_path(5, 600)
FAST = np.array([3, 5, 8])
SLOW = np.array([10, 20, 40])
HAS_GPU = gpu_status()[0] is not None


def test_env_selects_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QPIPE_BACKEND", "cpu")
    assert resolve_backend() == "cpu"
    assert resolve_backend("vectorbt") == "vectorbt"  # an explicit argument wins
    monkeypatch.setenv("QPIPE_BACKEND", " GPU ")
    assert resolve_backend() == "gpu"
    monkeypatch.delenv("QPIPE_BACKEND")
    assert resolve_backend() == "auto"


def test_bad_env_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QPIPE_BACKEND", "tpu")
    with pytest.raises(ValueError, match="QPIPE_BACKEND must be one of cpu, gpu, auto; got 'tpu'"):
        run_ma_sweep(CLOSE, FAST, SLOW, periods_per_year=8760)


def test_bad_backend_argument_is_named() -> None:
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'fpga'"):
        run_ma_sweep(CLOSE, FAST, SLOW, backend="fpga", periods_per_year=8760)


def test_bad_params_fail_before_compute() -> None:
    with pytest.raises(ValueError, match="unknown sweep parameter"):
        run_ma_sweep(CLOSE, FAST, SLOW, periods_per_year=8760, fee=0.1)
    with pytest.raises(ValueError, match="periods_per_year is required"):
        run_ma_sweep(CLOSE, FAST, SLOW)
    with pytest.raises(ValueError, match="non-positive price"):
        run_ma_sweep(-CLOSE, FAST, SLOW, periods_per_year=8760)


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU fallback; this machine has a GPU")
def test_auto_falls_back_to_cpu_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QPIPE_BACKEND", raising=False)
    run = run_ma_sweep(CLOSE, FAST, SLOW, periods_per_year=8760)
    assert run.backend == "cpu"
    assert run.fallback_reason and any(
        word in run.fallback_reason for word in ("CuPy", "CUDA", "no GPU sweep kernel")
    )
    assert "cores" in run.device and run.seconds >= 0
    with pytest.raises(RuntimeError, match="backend 'gpu' requested but no GPU is usable"):
        run_ma_sweep(CLOSE, FAST, SLOW, backend="gpu", periods_per_year=8760)


def test_cpu_and_vectorbt_backends_agree() -> None:
    cpu = run_ma_sweep(CLOSE, FAST, SLOW, backend="cpu", periods_per_year=8760, fees=0.001)
    vbt = run_ma_sweep(CLOSE, FAST, SLOW, backend="vectorbt", periods_per_year=8760, fees=0.001)
    assert (cpu.backend, cpu.fallback_reason, vbt.backend) == ("cpu", None, "vectorbt")
    assert_metrics_match(cpu.metrics, vbt.metrics)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no CUDA device / CuPy not installed")
def test_gpu_backend_runs_on_the_device() -> None:
    run = run_ma_sweep(CLOSE, FAST, SLOW, backend="gpu", periods_per_year=8760)
    cpu = run_ma_sweep(CLOSE, FAST, SLOW, backend="cpu", periods_per_year=8760)
    assert run.backend == "gpu" and run.fallback_reason is None
    assert_metrics_match(run.metrics, cpu.metrics)
