"""CuPy GPU sweep: a CUDA port of `kernels.simulate`, one thread per parameter set.

Each thread loops over the bars exactly like the Numba kernel (same float64 operations in
the same order), so results agree to ~1e-12. ``--fmad=false`` stops NVRTC from fusing
multiply-adds, which would change roundings and flip near-tie crossovers. The running sums
(SMA, RSI gains/losses) are sequential, so they are computed once on the host with the
Numba helpers and copied to the device. The grid is evaluated in chunks sized to the free
device memory.

CuPy is optional: importing this module never imports CuPy; `gpu_sweep` does.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from qpipe_dagster.backtest.kernels import N_METRICS, gain_loss_sums, running_sum

CUDA_SOURCE = r"""
#define REL_TOL 1e-9
#define ABS_TOL 1e-12
#define MIN_SIZE 1e-8
#define QP_INF __longlong_as_double(0x7ff0000000000000LL)
#define QP_NAN __longlong_as_double(0x7ff8000000000000LL)

__device__ __forceinline__ bool is_close(double a, double b) {
    if (isnan(a) || isnan(b) || isinf(a) || isinf(b)) return false;
    if (a == b) return true;
    return fabs(a - b) <= fmax(REL_TOL * fmax(fabs(a), fabs(b)), ABS_TOL);
}
__device__ __forceinline__ bool is_less(double a, double b) {
    if (is_close(a, b)) return false;
    return a < b;
}
__device__ __forceinline__ bool is_close_or_less(double a, double b) {
    if (is_close(a, b)) return true;
    return a < b;
}
__device__ __forceinline__ double sgn(double x) {
    if (isnan(x)) return x;
    return (double)((x > 0.0) - (x < 0.0));
}
__device__ __forceinline__ double add_nb(double a, double b) {
    double sa = sgn(a), sb = sgn(b);
    if (sa != sb) {
        if (is_close(fabs(a), fabs(b))) return 0.0;
    } else if (is_close(a + b, 0.0)) {
        return 0.0;
    }
    return a + b;
}
__device__ __forceinline__ double snap(double a) { return is_close(a, 0.0) ? 0.0 : a; }
__device__ __forceinline__ double sma(const double* cs, long long i, long long w) {
    if (i < w) return cs[i] / (double)w;
    return (cs[i] - cs[i - w]) / (double)w;
}
__device__ __forceinline__ void var_add(double val, double& nobs, double& mean, double& m2,
                                        double& comp, bool& unstable) {
    double prev_m2 = m2;
    nobs += 1.0;
    double prev_mean = mean - comp;
    double y = val - comp;
    double delta = y - mean;
    comp = delta + mean - y;
    mean += delta / nobs;
    m2 += (val - prev_mean) * (val - mean);
    if (prev_m2 * INV_COND_TOL > m2) unstable = true;
}
__device__ __forceinline__ void var_remove(double val, double& nobs, double& mean, double& m2,
                                           double& comp, bool& unstable) {
    double prev_m2 = m2;
    nobs -= 1.0;
    if (nobs != 0.0) {
        double prev_mean = mean - comp;
        double y = val - comp;
        double delta = y - mean;
        comp = delta + mean - y;
        mean -= delta / nobs;
        m2 -= (val - prev_mean) * (val - mean);
        if (prev_m2 * INV_COND_TOL > m2) unstable = true;
    } else {
        mean = 0.0;
        m2 = 0.0;
        unstable = false;
    }
}

extern "C" __global__ void sweep(
    const double* __restrict__ close, const double* __restrict__ cumsum,
    const double* __restrict__ cum_up, const double* __restrict__ cum_dn,
    const int family, const long long* __restrict__ w1s, const long long* __restrict__ w2s,
    const double* __restrict__ x1s, const double* __restrict__ x2s, const int direction,
    const double fees, const double slippage, const double init_cash, const double ann_factor,
    const long long* __restrict__ bounds, const int n_seg, double* __restrict__ out,
    const long long m)
{
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= m) return;
    const long long w1 = w1s[k], w2 = w2s[k];
    const double x1 = x1s[k], x2 = x2s[k];
    const long long end = bounds[n_seg];
    long long first;
    if (family == 0) first = (w2 > w1) ? w2 - 1 : w1 - 1;
    else if (family == 1) first = w1 - 1;
    else first = w1;

    bool up_was_below = false, dn_was_below = false;
    long long up_ago = -1, dn_ago = -1;
    double nobs = 0.0, mean = 0.0, m2 = 0.0, comp_add = 0.0, comp_rem = 0.0;
    bool unstable = false;

    int seg = 0;
    long long seg_start = bounds[0], seg_end = bounds[1];
    double cash = init_cash, free_cash = init_cash, debt = 0.0, position = 0.0;
    double lcash = init_cash, tp_cash = 0.0, prev_value = init_cash;
    long long n_orders = 0, in_market = 0, closed = 0, wins = 0;
    double sum_r = 0.0, sum_r2 = 0.0, sum_down2 = 0.0, cumprod = 1.0;
    double peak = -QP_INF, max_dd = 0.0;
    bool in_trade = false, trade_long = true;
    double e_size = 0.0, e_gross = 0.0, e_fees = 0.0;

    for (long long i = 0; i < end; ++i) {
        bool entry = false, exit_ = false;
        if (family == 0) {
            if (i >= first) {
                double fm = sma(cumsum, i, w1), sm = sma(cumsum, i, w2);
                if (fm > sm) {
                    if (up_was_below) { up_ago += 1; entry = (up_ago == 0); }
                } else if (fm == sm) { up_ago = -1; }
                else { up_ago = -1; up_was_below = true; }
                if (sm > fm) {
                    if (dn_was_below) { dn_ago += 1; exit_ = (dn_ago == 0); }
                } else if (sm == fm) { dn_ago = -1; }
                else { dn_ago = -1; dn_was_below = true; }
            }
        } else if (family == 1) {
            if (i > 0) {
                if (i >= w1) var_remove(close[i - w1], nobs, mean, m2, comp_rem, unstable);
                var_add(close[i], nobs, mean, m2, comp_add, unstable);
            }
            if (i == 0 || unstable) {
                nobs = 0.0; mean = 0.0; m2 = 0.0; comp_add = 0.0; comp_rem = 0.0;
                long long j0 = i - w1 + 1;
                if (j0 < 0) j0 = 0;
                for (long long j = j0; j <= i; ++j)
                    var_add(close[j], nobs, mean, m2, comp_add, unstable);
                unstable = false;
            }
            if (i >= first) {
                double mid = sma(cumsum, i, w1);
                double sd = sqrt(m2 / nobs);
                double upper = mid + x1 * sd;
                double lower = mid - x1 * sd;
                entry = close[i] < lower;
                exit_ = close[i] > upper;
            }
        } else {
            if (i >= first) {
                double gain = (cum_up[i] - cum_up[i - w1]) / (double)w1;
                double loss = (cum_dn[i] - cum_dn[i - w1]) / (double)w1;
                double rsi;
                if (loss == 0.0) rsi = (gain == 0.0) ? QP_NAN : 100.0;
                else rsi = 100.0 - 100.0 / (1.0 + gain / loss);
                entry = rsi < x1;
                exit_ = rsi > x2;
            }
        }
        if (i < seg_start) continue;

        double price = close[i];
        bool long_entry = entry, short_entry = false, long_exit = false;
        if (direction == 0) {
            long_exit = exit_;
            if (long_entry && long_exit) { long_entry = false; long_exit = false; }
        } else {
            short_entry = exit_;
            if (long_entry && short_entry) { long_entry = false; short_entry = false; }
        }
        int kind = 0;
        if (position > 0.0) {
            if (short_entry) kind = 3;
            else if (long_exit) kind = 2;
        } else if (position < 0.0) {
            if (long_entry) kind = 1;
        } else {
            if (long_entry) kind = 1;
            else if (short_entry) kind = 3;
        }
        bool traded = false, o_buy = true;
        double o_size = 0.0, o_price = 0.0, o_fees = 0.0;
        if (kind != 0) {
            cash = snap(cash); position = snap(position); debt = snap(debt);
            free_cash = snap(free_cash);
        }
        if (kind == 1) {
            double adj_price = price * (1.0 + slippage);
            double cash_limit = cash;
            if (cash_limit != 0.0) {
                double max_req_cash = add_nb(cash_limit, -0.0) / (1.0 + fees);
                if (max_req_cash > 0.0) {
                    double final_size = max_req_cash / adj_price;
                    if (!is_less(final_size, MIN_SIZE)) {
                        double fees_paid = cash_limit - max_req_cash;
                        double new_position = add_nb(position, final_size);
                        if (position < 0.0) {
                            double short_size = (new_position < 0.0) ? final_size : fabs(position);
                            double avg_entry = debt / fabs(position);
                            double debt_diff = short_size * avg_entry;
                            debt = add_nb(debt, -debt_diff);
                            free_cash = add_nb(free_cash + 2 * debt_diff, -cash_limit);
                        } else {
                            free_cash = add_nb(free_cash, -cash_limit);
                        }
                        cash = add_nb(cash, -cash_limit);
                        position = new_position;
                        traded = true; o_size = final_size; o_price = adj_price;
                        o_fees = fees_paid; o_buy = true;
                    }
                }
            }
        } else if (kind == 2 || kind == 3) {
            double adj_price = price * (1.0 - slippage);
            bool ok = true;
            double size_limit;
            if (kind == 2) {
                size_limit = position;
                if (position == 0.0) ok = false;
            } else {
                double long_size = fmax(position, 0.0);
                double long_cash = long_size * adj_price * (1.0 - fees);
                double total_free = add_nb(free_cash, long_cash);
                if (total_free <= 0.0) {
                    if (position <= 0.0) ok = false;
                    size_limit = long_size;
                } else {
                    double max_short = add_nb(total_free, -0.0) / (adj_price * (1.0 + fees));
                    size_limit = add_nb(long_size, max_short);
                    if (size_limit <= 0.0) ok = false;
                }
                size_limit = 1.0 * size_limit;
            }
            if (ok && !is_close(size_limit, 0.0) && !is_less(size_limit, MIN_SIZE)) {
                double acq_cash = size_limit * adj_price;
                double fees_paid = acq_cash * fees;
                double final_acq = add_nb(acq_cash, -fees_paid);
                if (final_acq >= 0.0) {
                    double new_position = add_nb(position, -size_limit);
                    if (new_position < 0.0) {
                        double short_size = (position < 0.0) ? size_limit : fabs(new_position);
                        double short_value = short_size * adj_price;
                        debt = debt + short_value;
                        free_cash = add_nb(free_cash, add_nb(final_acq, -2 * short_value));
                    } else {
                        free_cash = free_cash + final_acq;
                    }
                    cash = cash + final_acq;
                    position = new_position;
                    traded = true; o_size = size_limit; o_price = adj_price;
                    o_fees = fees_paid; o_buy = false;
                }
            }
        }

        if (traded) {
            n_orders += 1;
            double flow;
            if (o_buy) {
                flow = -o_size * o_price - o_fees;
                tp_cash = add_nb(tp_cash, -(o_size * o_price + o_fees));
            } else {
                flow = o_size * o_price - o_fees;
                tp_cash = add_nb(tp_cash, o_size * o_price - o_fees);
            }
            lcash = add_nb(lcash, add_nb(0.0, flow));
            if (!in_trade) {
                in_trade = true; trade_long = o_buy; e_size = 0.0; e_gross = 0.0; e_fees = 0.0;
            }
            if (trade_long == o_buy) {
                e_size += o_size; e_gross += o_size * o_price; e_fees += o_fees;
            } else if (is_close_or_less(o_size, e_size)) {
                double exit_size = is_close(o_size, e_size) ? e_size : o_size;
                double entry_price = e_gross / e_size;
                double entry_fees = (exit_size / e_size) * e_fees;
                double val_diff = add_nb(exit_size * o_price, -(exit_size * entry_price));
                if (val_diff != 0.0 && !trade_long) val_diff *= -1.0;
                if (val_diff - entry_fees - o_fees > 0.0) wins += 1;
                closed += 1;
                if (is_close(o_size, e_size)) {
                    in_trade = false;
                } else {
                    double frac = (e_size - o_size) / e_size;
                    e_size *= frac; e_gross *= frac; e_fees *= frac;
                }
            } else {
                double cl_size = e_size;
                double cl_fees = cl_size / o_size * o_fees;
                double entry_price = e_gross / e_size;
                double entry_fees = (cl_size / e_size) * e_fees;
                double val_diff = add_nb(cl_size * o_price, -(cl_size * entry_price));
                if (val_diff != 0.0 && !trade_long) val_diff *= -1.0;
                if (val_diff - entry_fees - cl_fees > 0.0) wins += 1;
                closed += 1;
                e_size = o_size - cl_size;
                e_gross = e_size * o_price;
                e_fees = o_fees - cl_fees;
                trade_long = !trade_long;
            }
        }

        if (position != 0.0) in_market += 1;
        if (position != 0.0 || traded) {
            double value = lcash + position * price;
            double r;
            if (prev_value == 0.0) {
                r = (value == 0.0) ? 0.0 : QP_INF * sgn(value);
            } else {
                r = (value - prev_value) / prev_value;
                if (prev_value < 0.0) r = -r;
            }
            prev_value = value;
            sum_r += r;
            sum_r2 += r * r;
            if (r < 0.0) sum_down2 += r * r;
            cumprod *= r + 1.0;
            double cum = cumprod * 100.0;
            if (cum > peak) peak = cum;
            double dd = cum / peak - 1.0;
            if (dd < max_dd || dd != dd) max_dd = dd;  /* NaN sticks, as in vectorbt */
        } else if (peak == -QP_INF) {
            peak = cumprod * 100.0;
        }

        if (i == seg_end - 1) {
            long long n = seg_end - seg_start;
            double total_return = (n_orders == 0) ? 0.0 : (tp_cash + position * price) / init_cash;
            double sharpe, sortino;
            if (n < 2) {
                sharpe = QP_NAN; sortino = QP_NAN;
            } else {
                double dn = (double)n;
                double mean_r = sum_r / dn;
                double ssd = sum_r2 - sum_r * mean_r;
                if (ssd < 0.0) ssd = 0.0;
                double std_r = sqrt(ssd / dn * dn / (double)(n - 1));
                sharpe = (std_r == 0.0) ? QP_INF : mean_r / std_r * sqrt(ann_factor);
                double downside = sqrt(sum_down2 / dn) * sqrt(ann_factor);
                sortino = (downside == 0.0) ? QP_INF : mean_r * ann_factor / downside;
            }
            int open_trade = (in_trade && is_less(-e_size, 0.0)) ? 1 : 0;
            long long stride = m;
            long long base = (long long)seg * N_METRICS;
            long long c = k;
            out[(base + 0) * stride + c] = total_return;
            out[(base + 1) * stride + c] = sharpe;
            out[(base + 2) * stride + c] = sortino;
            out[(base + 3) * stride + c] = max_dd;
            out[(base + 4) * stride + c] = (closed > 0) ? (double)wins / (double)closed : QP_NAN;
            out[(base + 5) * stride + c] = (double)(closed + open_trade);
            out[(base + 6) * stride + c] = (double)in_market / (double)n;
            seg += 1;
            if (seg < n_seg) {
                seg_start = bounds[seg]; seg_end = bounds[seg + 1];
                cash = init_cash; free_cash = init_cash; debt = 0.0; position = 0.0;
                lcash = init_cash; tp_cash = 0.0; n_orders = 0; prev_value = init_cash;
                sum_r = 0.0; sum_r2 = 0.0; sum_down2 = 0.0; cumprod = 1.0;
                peak = -QP_INF; max_dd = 0.0; in_market = 0; closed = 0; wins = 0;
                in_trade = false; e_size = 0.0; e_gross = 0.0; e_fees = 0.0;
            }
        }
    }
}
"""

THREADS_PER_BLOCK = 128
BYTES_PER_SET = 8 * 4 + 8 * N_METRICS * 3  # params + outputs (3 segments at most), per set


@cache
def _kernel():  # a cupy.RawKernel; CuPy is optional
    import cupy as cp  # pyright: ignore[reportMissingImports]  (the optional gpu extra)

    source = (
        f"#define N_METRICS {N_METRICS}\n"
        f"#define INV_COND_TOL {float(np.finfo(np.float64).eps * 1e3)!r}\n" + CUDA_SOURCE
    )
    # --fmad=false: no fused multiply-add, so every rounding matches the Numba kernel
    return cp.RawKernel(source, "sweep", options=("--fmad=false", "-std=c++14"))


def device_name() -> str:
    import cupy as cp  # pyright: ignore[reportMissingImports]  (the optional gpu extra)

    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def block_size(n_sets: int, n_sm: int) -> int:
    """Threads per block: 128, halved (down to 32) until the grid spans ~2 blocks per SM.

    A sweep of a few thousand sets at 128 threads per block would leave most SMs idle
    (4,851 sets = 38 blocks on a 132-SM H100); smaller blocks spread them over every SM.
    """
    tpb = THREADS_PER_BLOCK
    while tpb > 32 and -(-n_sets // tpb) < 2 * n_sm:
        tpb //= 2
    return tpb


def chunk_size(n_sets: int, free_bytes: int | None = None) -> int:
    """Parameter sets per launch: at most half the free device memory, at least one block."""
    if free_bytes is None:
        import cupy as cp  # pyright: ignore[reportMissingImports]  (the optional gpu extra)

        free_bytes = int(cp.cuda.runtime.memGetInfo()[0])
    fit = max(THREADS_PER_BLOCK, int(free_bytes // 2 // BYTES_PER_SET))
    return max(1, min(n_sets, fit, 4_000_000))


def gpu_sweep(
    close: np.ndarray,
    family: int,
    w1: np.ndarray,
    w2: np.ndarray,
    x1: np.ndarray,
    x2: np.ndarray,
    direction: int,
    fees: float,
    slippage: float,
    init_cash: float,
    ann_factor: float,
    bounds: np.ndarray,
    max_chunk: int | None = None,
) -> np.ndarray:
    """Same contract as `kernels.sweep_kernel` (inputs already validated), on the GPU.

    ``max_chunk`` caps the parameter sets per launch (default: what fits in memory).
    """
    import cupy as cp  # pyright: ignore[reportMissingImports]  (the optional gpu extra)

    kernel = _kernel()
    close = np.ascontiguousarray(close, dtype=np.float64)
    cs = running_sum(close)
    if family == 2:
        up, dn = gain_loss_sums(close)
    else:
        up = dn = np.zeros(1, dtype=np.float64)
    d_close, d_cs, d_up, d_dn = (cp.asarray(a) for a in (close, cs, up, dn))
    d_bounds = cp.asarray(np.ascontiguousarray(bounds, dtype=np.int64))
    n_seg = int(bounds.shape[0] - 1)
    m = int(w1.shape[0])
    result = np.empty((n_seg * N_METRICS, m), dtype=np.float64)
    step = chunk_size(m) if max_chunk is None else max(1, min(int(max_chunk), m))
    n_sm = int(cp.cuda.Device().attributes["MultiProcessorCount"])
    for lo in range(0, m, step):
        hi = min(m, lo + step)
        c = hi - lo
        args = [cp.asarray(np.ascontiguousarray(a[lo:hi])) for a in (w1, w2)]
        fargs = [cp.asarray(np.ascontiguousarray(a[lo:hi], dtype=np.float64)) for a in (x1, x2)]
        d_out = cp.empty((n_seg * N_METRICS, c), dtype=cp.float64)
        tpb = block_size(c, n_sm)
        kernel(
            ((c + tpb - 1) // tpb,),
            (tpb,),
            (
                d_close, d_cs, d_up, d_dn, np.int32(family),
                args[0].astype(cp.int64), args[1].astype(cp.int64), fargs[0], fargs[1],
                np.int32(direction), np.float64(fees), np.float64(slippage),
                np.float64(init_cash), np.float64(ann_factor), d_bounds, np.int32(n_seg),
                d_out, np.int64(c),
            ),
        )  # fmt: skip
        result[:, lo:hi] = cp.asnumpy(d_out)
    return result
