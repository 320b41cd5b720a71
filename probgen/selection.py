"""Model selection: fit one model per value of a size (components, states) and compare.

``pg.select(make_model, data, values, criterion)`` fits ``make_model(v)`` for every ``v``
and scores each fit:

* ``"bic"`` (Schwarz 1978): −2 log L + p log N, smaller is better;
* ``"aic"`` (Akaike 1974): −2 log L + 2 p, smaller is better;
* ``"heldout"``: the mean held-out log-likelihood per example of a fit on a seeded random
  split of the data (``test_fraction`` held out), larger is better.

log L is the exact log-likelihood of all the data at the fitted parameters, p the
declaration's ``num_free_params(params)`` and N the number of observations (data rows;
time steps for sequences, as hmmlearn's ``bic`` counts them). Reference: Hastie,
Tibshirani & Friedman (2009), *The Elements of Statistical Learning*, §7.5–7.7.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from probgen.random import generator

CRITERIA = ("bic", "aic", "heldout")
#: the table's columns, in order
COLUMNS = ("value", "criterion", "log_likelihood", "num_free_params", "seconds")


@dataclass
class Selection:
    """What `select` returns.

    ``criterion``: its name; ``rows``: one dict per value with the `COLUMNS` keys
    (``criterion`` the score, ``log_likelihood`` the total log-likelihood of the data the
    score is computed on — all of it for BIC / AIC, the held-out part for ``"heldout"`` —,
    ``num_free_params`` ``None`` where the score needs none, ``seconds`` the fit's wall time);
    ``best_value`` and ``best`` (its `probgen.Fit`, on all the data); ``fits``: every
    fit by value (for ``"heldout"``, fitted on the training part).

    Attributes:
      criterion: ``"bic"``, ``"aic"`` or ``"heldout"``.
      rows: one dict per value (``value``, ``criterion``, ``log_likelihood``,
        ``num_free_params``, ``seconds``).
      best_value: the value with the best score (the first on a tie).
      best: its `probgen.Fit`.
      fits: every fit by value.

    Examples:
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.cat([torch.randn(60, 2, generator=g) - 4, torch.randn(60, 2, generator=g) + 4]).double()
        >>> result = pg.select(lambda k: GaussianMixture(k, 2), x, values=[1, 2, 3], seed=0,
        ...                    progress=False)
        >>> result.best_value, [r["num_free_params"] for r in result.rows]
        (2, [5, 11, 17])
        >>> print(result.table.splitlines()[0])
        value  bic  log-likelihood  free params  seconds
        >>> result.plot("bic.png")
    """
    criterion: str
    rows: list[dict]
    best_value: Any
    best: Any
    fits: dict = field(default_factory=dict, repr=False)

    @property
    def table(self) -> str:
        """The rows as an aligned text table (``str(selection)``), the best value marked ``*``."""
        head = ["value", self.criterion, "log-likelihood", "free params", "seconds"]
        body = [[("*" if r["value"] == self.best_value else " ") + str(r["value"]), f"{r['criterion']:.6g}",
                 f"{r['log_likelihood']:.6g}", "-" if r["num_free_params"] is None else str(r["num_free_params"]),
                 f"{r['seconds']:.2f}"] for r in self.rows]
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        return "\n".join("  ".join(x.rjust(w) for x, w in zip(line, widths)) for line in [head, *body])

    def __str__(self) -> str:
        return self.table

    def plot(self, path: str) -> None:
        """Write a PNG of the criterion against the value, the best one marked.

        Args:
          path: the PNG file to write.
        """
        from probgen.plots import _plt
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5, 3.2))
        xs = [r["value"] for r in self.rows]
        ys = [r["criterion"] for r in self.rows]
        ax.plot(range(len(xs)), ys, marker="o")
        best = xs.index(self.best_value)
        ax.plot([best], [ys[best]], marker="*", markersize=14, color="C3", linestyle="none",
                label=f"best: {self.best_value}")
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_xlabel("value")
        ax.set_ylabel(self.criterion + (" (larger is better)" if self.criterion == "heldout"
                                        else " (smaller is better)"))
        ax.set_title(f"{type(self.best.model).__name__} · {self.best.engine}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def select(make_model: Callable[[Any], Any], data: Any, values: Iterable = range(1, 11), criterion: str = "bic",
           engine: str | None = None, seed: int | None = None, test_fraction: float = 0.2,
           **fit_options: Any) -> Selection:
    """Fit ``make_model(v)`` to ``data`` for each ``v`` in ``values`` and score the fits.

    Args:
      make_model: a function of one value returning a declaration (e.g.
        ``lambda k: GaussianMixture(k, 2)``).
      values: the values to try (at least one, each once).
      criterion: ``"bic"``, ``"aic"`` (need an exact log-likelihood and the declaration's
        ``num_free_params``) or ``"heldout"``.
      data: the data every fit gets.
      engine: passed to every `probgen.fit`.
      seed: passed to every `probgen.fit` (the same seed for each); also draws the
        ``"heldout"`` split.
      test_fraction: the held-out share of the data items (rows, or sequences) for
        ``"heldout"``.
      **fit_options: passed to every `probgen.fit`.

    BIC is −2 log L + p log N (Schwarz 1978), AIC −2 log L + 2p (Akaike 1974), with log L
    the exact log-likelihood of all the data, N the number of observations (rows; time
    steps for sequences) and p the declaration's ``num_free_params``; ``"heldout"`` the mean
    log-likelihood per held-out item.

    Returns:
      The scores and fits, a `Selection`; the best fit is refitted on all the data for ``"heldout"``.

    Raises:
      ValueError: an unknown criterion, empty or repeated values, or BIC / AIC of a
        method whose log-likelihood is not exact or of a declaration without a count.

    Examples:
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.cat([torch.randn(60, 2, generator=g) - 4, torch.randn(60, 2, generator=g) + 4]).double()
        >>> result = pg.select(lambda k: GaussianMixture(k, 2), x, values=[1, 2, 3], seed=0,
        ...                    progress=False)
        >>> result.best_value, result.best.params["loc"].shape
        (2, torch.Size([2, 2]))
    """
    from probgen.api import fit as pg_fit
    from probgen.registry import as_declaration, find_method
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {criterion!r}")
    if not callable(make_model):
        raise ValueError(f"make_model must be a function of one value returning a model, "
                         f"got {type(make_model).__name__}")
    values = list(values)
    if not values:
        raise ValueError("values is empty: give at least one value to try")
    if len(set(map(repr, values))) != len(values):
        raise ValueError(f"values must be distinct, got {values}")
    if criterion == "heldout" and not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    models = {}
    for v in values:
        m = make_model(v)
        models[v] = as_declaration(m)
        method = find_method(models[v], engine)
        if criterion != "heldout":
            if method.log_prob_kind != "exact":
                raise ValueError(f"criterion {criterion!r} needs the exact log-likelihood, but the {method.engine!r} "
                                 f"method {method.name!r} gives an {method.log_prob_kind}: use criterion='heldout'")
            if not hasattr(models[v], "num_free_params"):
                raise ValueError(f"criterion {criterion!r} needs the number of free parameters, which "
                                 f"{type(models[v]).__name__} does not state: use criterion='heldout'")
    checked = models[values[0]].check_data(data)
    items = checked.unpad() if hasattr(checked, "unpad") else checked
    if criterion == "heldout":
        n = len(items)
        n_test = int(round(test_fraction * n))
        if n_test < 1 or n_test >= n:
            raise ValueError(f"cannot hold out {test_fraction:g} of {n} data items (rows or sequences): "
                             "need at least one in each part")
        perm = torch.randperm(n, generator=generator(seed), device="cpu")
        train, test = _take(items, perm[n_test:]), _take(items, perm[:n_test])
    else:
        train = test = data
        n_obs = int(checked.lengths.sum()) if hasattr(checked, "lengths") else len(checked)
    rows, fits = [], {}
    for v in values:
        start = time.perf_counter()
        f = pg_fit(models[v], train, engine=engine, seed=seed, **fit_options)
        seconds = time.perf_counter() - start
        ll = float(f.log_prob(test).sum())
        if criterion == "heldout":
            p, score = None, ll / len(test)
        else:
            p = int(models[v].num_free_params(f.params))
            score = -2 * ll + (p * math.log(n_obs) if criterion == "bic" else 2 * p)
        fits[v] = f
        rows.append({"value": v, "criterion": score, "log_likelihood": ll, "num_free_params": p, "seconds": seconds})
    scores = [r["criterion"] for r in rows]
    if not all(math.isfinite(s) for s in scores):
        bad = [r["value"] for r in rows if not math.isfinite(r["criterion"])]
        raise ValueError(f"the {criterion} of the fits for values {bad} is not finite")
    pick = max if criterion == "heldout" else min
    best_value = values[scores.index(pick(scores))]   # the first on a tie: the smallest model listed first
    best = fits[best_value]
    if criterion == "heldout":
        best = pg_fit(models[best_value], data, engine=engine, seed=seed, **fit_options)
    return Selection(criterion, rows, best_value, best, fits)


def _take(items: Any, idx: torch.Tensor) -> Any:
    if isinstance(items, torch.Tensor):
        return items[idx]
    return [items[i] for i in idx.tolist()]
