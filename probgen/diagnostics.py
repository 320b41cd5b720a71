"""Convergence diagnostics of Markov chains: rank-normalised split R-hat, effective sample
sizes and Monte Carlo standard errors, vectorised over parameters.

Draws are arrays shaped ``(chain, draw, *shape)``; every function treats the trailing
dimensions as independent parameters and returns an array of shape ``shape``.

* `split_rhat` — the split potential scale reduction factor of Gelman et al., BDA3
  §11.4 (each chain cut in two halves; the middle draw of an odd-length chain is dropped).
* `rhat` — its rank-normalised form (Vehtari, Gelman, Simpson, Carpenter & Bürkner
  2021, "Rank-normalization, folding, and localization", §4.2): the larger of split R-hat of
  the rank-normalised draws (bulk) and of the rank-normalised folded draws |x − median|
  (tails). This is what `probgen.Fit.diagnostics` reports as ``r_hat``.
* `ess` — the effective sample size of BDA3 §11.5, with autocorrelations estimated
  over all chains and truncated by Geyer's initial monotone sequence (Geyer 1992; Vehtari
  et al. 2021, §3.2); ``method="bulk"`` (the default, what the table reports as ``ess``)
  applies it to the rank-normalised split chains, ``method="mean"`` to the raw split chains
  (the ESS of the posterior mean, used for its Monte Carlo standard error).
* `mcse_mean` — sd / sqrt(ESS_mean), the Monte Carlo standard error of the mean.

The same estimators as ArviZ's ``rhat(method="rank")``, ``ess(method="bulk" | "mean")``
and ``mcse(method="mean")`` (a test compares them).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

__all__ = ["split_rhat", "rhat", "ess", "mcse_mean", "summary", "Diagnostics"]


def _draws(x: Any) -> np.ndarray:
    """``x`` as a float64 array ``(chain, draw, P)`` (trailing dimensions flattened)."""
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"draws must be shaped (chain, draw, ...), got an array of shape {a.shape}")
    return a.reshape(a.shape[0], a.shape[1], -1)


def _split(a: np.ndarray) -> np.ndarray:
    """Each chain cut in two halves: ``(2C, S // 2, P)``."""
    half = a.shape[1] // 2
    return np.concatenate([a[:, :half], a[:, a.shape[1] - half:]], axis=0)


def _rank_normal(a: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled ranks per parameter (average ranks for ties; Blom's
    offset 3/8, Vehtari et al. 2021 eq. 14)."""
    c, s, p = a.shape
    r = rankdata(a.reshape(c * s, p), axis=0, method="average")
    return ndtri((r - 0.375) / (c * s + 0.25)).reshape(c, s, p)


def _psrf(a: np.ndarray) -> np.ndarray:
    """sqrt(var⁺ / W) of BDA3 eq. 11.3–11.4 for chains ``(C, S, P)``."""
    s = a.shape[1]
    w = a.var(axis=1, ddof=1).mean(axis=0)          # within-chain variance W
    b = s * a.mean(axis=1).var(axis=0, ddof=1)      # between-chain variance B
    return np.sqrt(((s - 1) / s * w + b / s) / w)


def _need(a: np.ndarray, what: str) -> None:
    if a.shape[1] < 4:
        raise ValueError(f"{what} needs at least 4 draws per chain (each chain is split in two), "
                         f"got {a.shape[1]}")


def split_rhat(x: Any) -> np.ndarray:
    """Split R-hat (Gelman et al., BDA3 §11.4) of draws ``(chain, draw, *shape)``.

    Args:
      x: draws, an array or tensor of shape ``(chain, draw, *shape)``, at least 4 per chain.

    Returns:
      An array of shape ``shape``: ~1 for chains that agree, > 1 for chains that do not.

    Raises:
      ValueError: fewer than 4 draws per chain.

    Examples:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal(size=(4, 500, 2))  # 4 chains, 500 draws, 2 parameters
        >>> from probgen.diagnostics import split_rhat
        >>> split_rhat(draws).round(2).tolist()
        [1.0, 1.0]
        >>> draws[0] += 3  # one chain elsewhere
        >>> split_rhat(draws).round(1).tolist()
        [1.7, 1.7]
    """
    a = _draws(x)
    _need(a, "split R-hat")
    with np.errstate(invalid="ignore", divide="ignore"):
        return _psrf(_split(a)).reshape(np.shape(x)[2:])


def rhat(x: Any) -> np.ndarray:
    """Rank-normalised split R-hat (Vehtari et al. 2021, §4.2): max of bulk and folded-tail R-hat.

    What `probgen.Fit.diagnostics` reports as ``r_hat``; equal to ArviZ's
    ``rhat(method="rank")`` to float error.

    Args:
      x: draws, shape ``(chain, draw, *shape)``, at least 4 per chain.

    Returns:
      An array of shape ``shape``.

    Raises:
      ValueError: fewer than 4 draws per chain.

    Examples:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal(size=(4, 500, 2))  # 4 chains, 500 draws, 2 parameters
        >>> from probgen.diagnostics import rhat
        >>> rhat(draws).round(2).tolist()
        [1.0, 1.0]
    """
    a = _draws(x)
    _need(a, "R-hat")
    sp = _split(a)
    folded = np.abs(sp - np.median(sp.reshape(-1, sp.shape[2]), axis=0))   # |x − median|, split draws
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.maximum(_psrf(_rank_normal(sp)), _psrf(_rank_normal(folded)))
    return out.reshape(np.shape(x)[2:])


def _autocov(a: np.ndarray) -> np.ndarray:
    """Biased autocovariance of every chain and parameter at lags 0..S-1, by FFT: ``(C, S, P)``."""
    s = a.shape[1]
    d = a - a.mean(axis=1, keepdims=True)
    n = 1 << (2 * s - 1).bit_length()                      # zero padding: no circular wrap
    f = np.fft.rfft(d, n=n, axis=1)
    return np.fft.irfft(f * np.conj(f), n=n, axis=1)[:, :s] / s


def _ess(a: np.ndarray) -> np.ndarray:
    """ESS of chains ``(C, S, P)`` (BDA3 eq. 11.7–11.8 with Geyer's initial monotone
    sequence on the pairs ρ_{2t} + ρ_{2t+1}), vectorised over parameters."""
    c, s, p = a.shape
    total = c * s
    acov = _autocov(a)
    w = acov[:, 0].mean(axis=0) * s / (s - 1)              # W: mean within-chain variance
    var_plus = w * (s - 1) / s
    if c > 1:
        var_plus = var_plus + a.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = 1.0 - (w - acov.mean(axis=0)) / var_plus      # (S, P): combined autocorrelations
    kept = np.zeros((s, p))
    kept[0], kept[1] = 1.0, rho[1]
    even, odd = np.ones(p), rho[1].copy()
    stop = np.ones(p, dtype=np.int64)        # per parameter: the lag index where its sequence ended
    t = 1
    # initial positive sequence: take the pairs (ρ_{t+1}, ρ_{t+2}) while the last pair's sum
    # is positive (a pair with a negative sum is not taken)
    while t < s - 3:
        active = ((even + odd) > 0) & (stop == t)
        if not active.any():
            break
        e, o = rho[t + 1], rho[t + 2]
        even, odd = np.where(active, e, even), np.where(active, o, odd)
        take = active & (e + o >= 0)
        kept[t + 1] = np.where(take, e, kept[t + 1])
        kept[t + 2] = np.where(take, o, kept[t + 2])
        stop = np.where(active, t + 2, stop)
        t += 2
    max_t = stop - 2
    cols = np.arange(p)
    # the last even autocorrelation, when positive, still counts once (Stan's ess does the same)
    kept[max_t + 1, cols] = np.where(even > 0, even, kept[max_t + 1, cols])
    # initial monotone sequence: a pair's sum never exceeds the previous pair's
    for t in range(1, s - 2, 2):
        prev = kept[t - 1] + kept[t]
        worse = (t <= max_t - 2) & (kept[t + 1] + kept[t + 2] > prev)
        kept[t + 1] = np.where(worse, prev / 2, kept[t + 1])
        kept[t + 2] = np.where(worse, prev / 2, kept[t + 2])
    lags = np.arange(s)[:, None]
    tau = -1.0 + 2.0 * (kept * (lags <= max_t)).sum(axis=0) + kept[max_t + 1, cols]
    tau = np.maximum(tau, 1.0 / np.log10(total))
    out = total / tau
    # a constant parameter: every draw is the value (ArviZ's convention)
    out = np.where(a.max(axis=(0, 1)) - a.min(axis=(0, 1)) < np.finfo(float).resolution, float(total), out)
    return np.where(np.isnan(rho).any(axis=0), np.nan, out)


def ess(x: Any, method: str = "bulk") -> np.ndarray:
    """Effective sample size of draws ``(chain, draw, *shape)``.

    Autocorrelations are estimated over all chains by FFT and truncated by Geyer's initial
    monotone sequence (Geyer 1992); ArviZ's ``ess(method="bulk" | "mean")`` to float error.

    Args:
      x: draws, shape ``(chain, draw, *shape)``, at least 4 per chain.
      method: ``"bulk"``: of the rank-normalised split chains (Vehtari et al. 2021, §3.2);
        ``"mean"``: of the raw split chains (BDA3 §11.5, the ESS of the mean).

    Returns:
      An array of shape ``shape``; about ``chain × draw`` for independent draws.

    Raises:
      ValueError: an unknown method or fewer than 4 draws per chain.

    Examples:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal(size=(4, 500, 2))  # 4 chains, 500 draws, 2 parameters
        >>> from probgen.diagnostics import ess
        >>> ess(draws).round(-2).tolist()  # 2000 independent draws
        [1700.0, 2000.0]
    """
    if method not in ("bulk", "mean"):
        raise ValueError(f"ess method must be 'bulk' or 'mean', got {method!r}")
    a = _draws(x)
    _need(a, "the effective sample size")
    sp = _split(a)
    return _ess(_rank_normal(sp) if method == "bulk" else sp).reshape(np.shape(x)[2:])


def mcse_mean(x: Any) -> np.ndarray:
    """Monte Carlo standard error of the posterior mean: sd / sqrt(ESS_mean) (BDA3 §10.5).

    Args:
      x: draws, shape ``(chain, draw, *shape)``, at least 4 per chain.

    Returns:
      An array of shape ``shape``.

    Examples:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal(size=(4, 500, 2))  # 4 chains, 500 draws, 2 parameters
        >>> from probgen.diagnostics import mcse_mean
        >>> mcse_mean(draws).round(2).tolist()  # about 1 / sqrt(2000)
        [0.02, 0.02]
    """
    a = _draws(x)
    sd = a.reshape(-1, a.shape[2]).std(axis=0, ddof=1)
    return (sd / np.sqrt(ess(x, "mean").reshape(-1))).reshape(np.shape(x)[2:])


class Diagnostics(list):
    """Rows ``{"parameter", "mean", "sd", "mcse", "ess", "r_hat"}``, one per scalar parameter
    (``"loc[1,0]"`` for an entry of a vector site); ``str()`` prints them as a table.
    What `summary` and `probgen.Fit.diagnostics` return.

    Examples:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal(size=(4, 500, 2))  # 4 chains, 500 draws, 2 parameters
        >>> from probgen.diagnostics import summary
        >>> table = summary({"loc": draws})
        >>> print(str(table).splitlines()[0])
        parameter mean sd mcse ess r_hat
        >>> [r["parameter"] for r in table], round(table.row("loc[1]")["r_hat"], 2)
        (['loc[0]', 'loc[1]'], 1.0)
    """

    columns = ("mean", "sd", "mcse", "ess", "r_hat")

    def __str__(self) -> str:
        width = max([len("parameter")] + [len(r["parameter"]) for r in self])
        head = f"{'parameter':<{width}}" + "".join(f"{c:>11}" for c in self.columns)
        lines = [head]
        for r in self:
            cells = "".join(f"{r[c]:>11.1f}" if c == "ess" else f"{r[c]:>11.4g}" for c in self.columns)
            lines.append(f"{r['parameter']:<{width}}" + cells)
        return "\n".join(lines)

    def row(self, parameter: str) -> dict:
        """The row of ``parameter``.

        Args:
          parameter: its label (e.g. ``"mu"`` or ``"loc[1,0]"``).

        Returns:
          The row dict.

        Raises:
          ValueError: no such parameter (the known ones are named).
        """
        for r in self:
            if r["parameter"] == parameter:
                return r
        raise ValueError(f"no parameter {parameter!r}; parameters: {[r['parameter'] for r in self]}")


def summary(draws: dict[str, Any]) -> Diagnostics:
    """The diagnostics table of ``{name: (chain, draw, *shape)}`` draws (see `Diagnostics`):
    mean, sd, `mcse_mean`, bulk `ess` and `rhat` of every scalar entry.

    Args:
      draws: ``{name: (chain, draw, *shape)}`` arrays or tensors, at least 4 draws per chain.

    Returns:
      The table (a `Diagnostics`), one row per scalar entry.

    Examples:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal(size=(4, 500, 2))  # 4 chains, 500 draws, 2 parameters
        >>> from probgen.diagnostics import summary
        >>> table = summary({"mu": draws[..., 0], "loc": draws})
        >>> [r["parameter"] for r in table]
        ['mu', 'loc[0]', 'loc[1]']
        >>> round(table.row("mu")["mean"], 1), round(table.row("mu")["sd"], 1)
        (-0.0, 1.0)
    """
    rows = Diagnostics()
    for name, x in draws.items():
        a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
        shape = a.shape[2:]
        flat = a.reshape(a.shape[0], a.shape[1], -1)
        mean, sd = flat.mean(axis=(0, 1)), flat.reshape(-1, flat.shape[2]).std(axis=0, ddof=1)
        m, e, r = mcse_mean(flat), ess(flat), rhat(flat)
        for j in range(flat.shape[2]):
            label = name if not shape else f"{name}[{','.join(map(str, np.unravel_index(j, shape)))}]"
            rows.append({"parameter": label, "mean": float(mean[j]), "sd": float(sd[j]), "mcse": float(m[j]),
                         "ess": float(e[j]), "r_hat": float(r[j])})
    return rows
