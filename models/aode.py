"""Averaged one-dependence estimators (AODE; Webb, Boughton & Wang 2005, "Not so naive
Bayes: aggregating one-dependence estimators", Machine Learning 58:5-24).

Each attribute ``i`` in turn is a "super-parent" of all the others (a SPODE):
``p_i(y, x) = P(y, x_i) prod_{j != i} P(x_j | y, x_i)``. AODE averages the SPODEs whose
parent value was seen at least ``m`` times in training:

    P(y, x) ∝ (1/|S(x)|) sum_{i in S(x)} P(y, x_i) prod_{j != i} P(x_j | y, x_i),
    S(x) = {i : F(x_i) >= m},

falling back to naive Bayes when ``S(x)`` is empty. The estimates are Laplace-smoothed
frequencies (``pseudo_count`` = 1 in the paper):

    P(y, x_i) = (F(y, x_i) + a) / (N + a C V_i),
    P(x_j | y, x_i) = (F(y, x_i, x_j) + a) / (F(y, x_i) + a V_j).

Data ``(X, y)``: ``X`` ``(N, D)`` integer codes, ``y`` ``(N,)`` class codes ``0..C-1``.
Parameters (tensors, all counts so the fit is exact and cheap to update):
``counts`` ``F(y, x_i, x_j)`` ``(C, D, V, D, V)`` (its diagonal ``i == j`` holds
``F(y, x_i)``), ``n_values`` ``(D,)`` the number of values of each feature.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from probgen.declarations import Declaration
from probgen.registry import check_options
from probgen.models.categorical_mixture import check_codes, one_hot

#: rows per chunk when scoring: bounds the (chunk, C, D, V) intermediate
_CHUNK_ENTRIES = 2 ** 22


def check_xy(data: Any, n_features: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)`` (a tuple, or a dict with keys X and y) as int64 tensors."""
    if isinstance(data, dict) and set(data) == {"X", "y"}:
        data = (data["X"], data["y"])
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("a classifier's data is a pair (X, y): X an (N, D) array of integer feature codes, "
                         "y an (N,) array of class codes 0..C-1")
    x = check_codes(data[0], "X", n_features=n_features)
    y = check_codes(torch.as_tensor(np.asarray(data[1])).reshape(-1, 1) if not isinstance(data[1], torch.Tensor)
                    else data[1].reshape(-1, 1), "y")[:, 0]
    if len(y) != len(x):
        raise ValueError(f"X has {len(x)} rows but y has {len(y)}")
    return x, y


class AODE(Declaration):
    """Averaged one-dependence estimators.

    Args:
      m: the frequency limit: a super-parent value must occur at least ``m`` times in
        training for its SPODE to take part (Webb et al. use 30; 1 keeps every seen one).
      pseudo_count: Laplace smoothing ``a`` of every estimate.

    Webb, Boughton & Wang (2005), "Not so naive Bayes: aggregating one-dependence
    estimators": p(y, x) is the average over super-parents i of p(y, x_i) Π_j p(x_j | y, x_i);
    fitted in closed form by counting. Data: ``(X, y)`` with ``X`` an ``(N, F)`` integer tensor
    of values and ``y`` the ``(N,)`` classes.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import AODE
        >>> model, (X, y) = AODE.example(seed=0)  # 80 rows, 3 features, 2 classes
        >>> fit = pg.fit(AODE(), (X, y), progress=False)
        >>> fit.engine, fit.method
        ('exact', 'counting_classifier')
        >>> pg.infer(fit, X[:4], query="marginals").shape  # p(y | x) per row
        torch.Size([4, 2])
        >>> pg.infer(fit, X[:4], query="map").shape
        torch.Size([4])
    """

    short_name = "aode"
    default_engine = "exact"
    _repr_fields = ("m", "pseudo_count")

    def __init__(self, m: int = 1, pseudo_count: float = 1.0):
        if not isinstance(m, int) or m < 0:
            raise ValueError(f"m (the frequency limit) must be a non-negative integer, got {m!r}")
        if pseudo_count <= 0:
            raise ValueError(f"pseudo_count must be > 0 (probabilities of unseen values), got {pseudo_count}")
        self.m = m
        self.pseudo_count = float(pseudo_count)

    def structure(self, *args: Any, params: bool = False, **options: Any):
        """One super-parent one-dependence estimator, the template AODE averages over every
        super-parent i: y → x_i, y → x_j and x_i → x_j for the other features j."""
        from probgen.graph import plate_diagram
        check_options("structure", options)
        return plate_diagram(
            {"y": {"kind": "observed", "distribution": "Categorical"},
             "x_i": {"kind": "observed", "distribution": "Categorical", "role": "super-parent"},
             "x_j": {"kind": "observed", "distribution": "Categorical", "plates": ("features j != i",)}},
            [("y", "x_i"), ("y", "x_j"), ("x_i", "x_j")], {"features j != i": None},
            {"counts": ["y", "x_i", "x_j"]} if params else None)

    def check_data(self, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return check_xy(data)

    def count(self, data: tuple[torch.Tensor, torch.Tensor], n_classes: int | None = None,
              n_values: Any = None) -> dict[str, torch.Tensor]:
        """The sufficient statistics ``F(y, x_i, x_j)`` in one contraction of indicators."""
        x, y = data
        c = int(y.max()) + 1 if n_classes is None else n_classes
        nv = (x.max(0).values + 1) if n_values is None else torch.as_tensor(n_values).long()
        v = int(nv.max())
        oh = one_hot(x, v).reshape(len(x), -1)  # (N, D*V)
        d = x.shape[1]
        # per class, the co-occurrence counts of every pair of (feature, value): one matmul
        counts = torch.stack([oh[y == k].T @ oh[y == k] for k in range(c)]).reshape(c, d, v, d, v)
        return {"counts": counts, "n_values": nv, "n": torch.tensor(float(len(y)), dtype=torch.float64)}

    def _estimates(self, params: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``log P(y, x_i)`` ``(C, D, V)``, ``log P(x_j | y, x_i)`` ``(C, D, V, D, V)``,
        ``F(x_i)`` ``(D, V)`` and naive Bayes' ``log P(y)``, ``log P(x_j | y)``."""
        counts, nv, n = params["counts"], params["n_values"], params["n"]
        a = self.pseudo_count
        c, d, v = counts.shape[:3]
        diag = counts[:, torch.arange(d), :, torch.arange(d), :]  # (D, C, V, V)
        f_yx = torch.diagonal(diag, dim1=-2, dim2=-1).permute(1, 0, 2)  # F(y, x_i): (C, D, V)
        nvf = nv.double()
        log_pair = torch.log((f_yx + a) / (n + a * c * nvf)[None, :, None])
        log_cond = torch.log((counts + a) / (f_yx[..., None, None] + a * nvf[None, None, None, :, None]))
        f_x = f_yx.sum(0)  # (D, V)
        f_y = f_yx[:, 0].sum(-1)  # (C,)
        log_prior = torch.log((f_y + a) / (n + a * c))
        log_nb = torch.log((f_yx + a) / (f_y[:, None, None] + a * nvf[None, :, None]))
        return log_pair, log_cond, f_x, (log_prior, log_nb)

    def class_log_joint(self, params: dict, x: Any, parents: str = "frequent") -> torch.Tensor:
        """``log P(y = c, x_n)`` as AODE estimates it, ``(N, C)``; ``parents="frequent"``
        averages the SPODEs with ``F(x_i) >= m`` (naive Bayes when there are none),
        ``"all"`` every SPODE (a proper mixture distribution)."""
        nv = params["n_values"]
        x = check_codes(x, "X", n_features=len(nv), n_values=nv)
        log_pair, log_cond, f_x, (log_prior, log_nb) = self._estimates(params)
        c, d, v = log_pair.shape
        dd = torch.arange(d)
        out = []
        chunk = max(1, _CHUNK_ENTRIES // (c * d * d))
        for start in range(0, len(x), chunk):
            xb = x[start:start + chunk]  # (B, D)
            # L[b, c, i] = sum_{j != i} log P(x_j | c, x_i): gather (C, B, D_i, D_j)
            g = log_cond[:, dd[None, :, None], xb[:, :, None], dd[None, None, :], xb[:, None, :]]
            g = g * (1 - torch.eye(d, dtype=g.dtype))  # j == i is not a child of itself
            spode = g.sum(-1) + log_pair[:, dd[None, :], xb]  # (C, B, D)
            if parents == "all":
                eligible = torch.ones(len(xb), d, dtype=torch.bool)
            else:
                eligible = f_x[dd[None, :], xb] >= self.m  # (B, D)
            k = eligible.sum(-1)
            masked = torch.where(eligible[None], spode, torch.full_like(spode, -math.inf))
            aode = torch.logsumexp(masked, -1) - torch.log(k.clamp_min(1).double())[None]  # (C, B)
            nb = log_prior[:, None] + log_nb[:, dd[None, :], xb].sum(-1)  # (C, B)
            out.append(torch.where(k[None] > 0, aode, nb).T)
        return torch.cat(out)

    def class_log_posterior(self, params: dict, x: Any) -> torch.Tensor:
        """``log P(y = c | x_n)``, ``(N, C)``."""
        lj = self.class_log_joint(params, x)
        return lj - torch.logsumexp(lj, -1, keepdim=True)

    def log_prob(self, params: dict, data: Any) -> torch.Tensor:
        """``log P(x_n, y_n)`` under the average of all SPODEs (normalised), ``(N,)``."""
        x, y = check_xy(data)
        lj = self.class_log_joint(params, x, parents="all")
        if (y >= lj.shape[1]).any():
            raise ValueError(f"y has classes beyond the fitted {lj.shape[1]}")
        return lj[torch.arange(len(y)), y]

    def sample(self, params: dict, n: int, seed: int | None = None) -> dict[str, torch.Tensor]:
        """``n`` draws ``{"X": (n, D), "y": (n,)}`` from the SPODE mixture: a super-parent
        ``i`` uniformly, ``(y, x_i) ~ P(y, x_i)``, then every ``x_j ~ P(x_j | y, x_i)``."""
        from probgen.random import generator
        g = generator(seed)
        log_pair, log_cond, _, _ = self._estimates(params)
        c, d, v = log_pair.shape
        nv = params["n_values"]
        valid = torch.arange(v)[None, :] < nv[:, None]  # (D, V)
        i = torch.randint(d, (n,), generator=g)
        pair = torch.exp(log_pair).masked_fill(~valid[None], 0.0)[:, i, :].permute(1, 0, 2).reshape(n, -1)
        yv = torch.multinomial(pair, 1, generator=g)[:, 0]
        y, xi = yv // v, yv % v
        cond = torch.exp(log_cond[y, i, xi])  # (n, D, V)
        cond = cond.masked_fill(~valid[None], 0.0)
        x = torch.multinomial(cond.reshape(-1, v), 1, generator=g).reshape(n, d)
        x[torch.arange(n), i] = xi
        return {"X": x, "y": y}

    @classmethod
    def example(cls, seed: int = 0) -> tuple["AODE", tuple[torch.Tensor, torch.Tensor]]:
        """Three binary features where ``x1`` copies ``x0`` (a dependence naive Bayes
        ignores), 80 rows."""
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(2, (80,), generator=g)
        x0 = torch.where(torch.rand(80, generator=g) < 0.7, y, 1 - y)
        x1 = torch.where(torch.rand(80, generator=g) < 0.9, x0, 1 - x0)
        x2 = torch.randint(2, (80,), generator=g)
        return cls(m=1), (torch.stack([x0, x1, x2], 1), y)
