"""A finite mixture of products of categoricals (the latent class model; Lazarsfeld
1950): ``p(x) = sum_k weights_k prod_d probs[k, d, x_d]`` over ``D`` discrete features
with values ``0..V-1``. With one component it is the independence model that naive
Bayes uses per class.

Data: an ``(N, D)`` array of non-negative integer codes; NaN marks a missing cell (kept
as the code −1): a missing feature is left out of its row's product (marginalised
exactly), and of the M-step's counts. A row with every feature missing is refused.
Parameters: ``weights`` ``(K,)`` and ``probs`` ``(K, D, V)`` (rows over values sum to one;
``V`` the largest number of values of any feature).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probgen.declarations import Declaration
from probgen.registry import check_options


def check_codes(x: Any, name: str = "X", n_features: int | None = None, n_values: Any = None,
                missing: bool = False) -> torch.Tensor:
    """An ``(N, D)`` int64 tensor of non-negative integer codes (``ValueError`` otherwise);
    with ``n_values`` (an int or per-feature sizes) codes must lie below it. ``missing=True``:
    NaN (or −1) marks a missing cell, returned as −1; a row with every cell missing is refused.
    Integer tensors that pass (checked codes: EM asks every iteration) come back as they are,
    checked in torch without a copy; anything else, or a failing one, takes the NumPy path,
    which says what is wrong."""
    if isinstance(x, torch.Tensor) and x.dim() == 2 and len(x) and not x.is_floating_point() \
            and x.dtype != torch.bool and _codes_pass(x, n_features, n_values, missing):
        return x.long()
    try:
        arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an (N, D) array of integer codes ({exc})") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array of integer codes, got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} must have {n_features} features (shape (N, {n_features})), got {arr.shape}")
    if missing:
        gap = np.isnan(arr) | (arr == -1)
        if gap.all(1).any():
            raise ValueError(f"{name} row {int(np.argwhere(gap.all(1))[0, 0])} is entirely missing; drop it: "
                             "it carries no information")
        arr = np.where(gap, 0.0, arr)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; features must be integer codes 0, 1, ...")
    if (arr < 0).any() or (arr != np.round(arr)).any():
        i, j = np.argwhere((arr < 0) | (arr != np.round(arr)))[0]
        raise ValueError(f"{name}[{i}, {j}] = {arr[i, j]:g} is not a non-negative integer code")
    if n_values is not None:
        lim = np.broadcast_to(np.asarray(n_values), (arr.shape[1],))
        bad = arr >= lim
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"{name}[{i}, {j}] = {int(arr[i, j])}: feature {j} has values 0..{int(lim[j]) - 1} "
                             "in the fitted model")
    out = torch.from_numpy(arr.astype(np.int64))
    return out.masked_fill_(torch.from_numpy(gap), -1) if missing and gap.any() else out


def _codes_pass(x: torch.Tensor, n_features: int | None, n_values: Any, missing: bool) -> bool:
    """Whether integer codes ``x`` ``(N, D)`` pass `check_codes`' checks (−1 a missing cell)."""
    if n_features is not None and x.shape[1] != n_features:
        return False
    gap = x == -1
    if bool((x < 0).any()) and (not missing or bool((x < -1).any()) or bool(gap.all(1).any())):
        return False
    if n_values is not None:
        lim = torch.as_tensor(np.broadcast_to(np.asarray(n_values), (x.shape[1],)).copy(), device=x.device)
        if bool((x >= lim).any()):
            return False
    return True


def one_hot(x: torch.Tensor, n_values: int) -> torch.Tensor:
    """``(N, D)`` codes -> ``(N, D, V)`` float64 indicators (all zero for a missing cell, −1)."""
    if bool((x < 0).any()):
        return torch.nn.functional.one_hot(x.clamp(min=0), n_values).double() * (x >= 0).unsqueeze(-1)
    return torch.nn.functional.one_hot(x, n_values).double()


class CategoricalMixture(Declaration):
    """Mixture of ``n_components`` products of categoricals over discrete features.

    ``pseudo_count``: a symmetric Dirichlet pseudo-count added to the expected counts in
    every M-step (``1`` = Laplace smoothing, so unseen values keep some probability).
    Fitted by EM (Dempster, Laird & Rubin 1977); the latent class model of Lazarsfeld (1950).

    Args:
      n_components: the number of components K.
      pseudo_count: the Dirichlet pseudo-count.
      n_values: the number of values V of every feature (``None``: from the data).

    Parameters (``Fit.params``): ``weights`` (K,), ``probs`` (K, F, V). Data: an ``(N, F)``
    integer tensor of values 0..V−1 (−1 for a missing cell).

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import CategoricalMixture
        >>> model, codes = CategoricalMixture.example(seed=0)  # 60 rows, 4 features of 3 values
        >>> fit = pg.fit(model, codes, steps=10, seed=0, progress=False)
        >>> fit.params["weights"].shape, fit.params["probs"].shape
        (torch.Size([2]), torch.Size([2, 4, 3]))
        >>> fit.log_prob(codes).shape, fit.log_prob_kind
        (torch.Size([60]), 'exact')"""

    short_name = "catmix"
    default_engine = "em"
    _repr_fields = ("n_components", "pseudo_count", "n_values")

    def __init__(self, n_components: int = 2, pseudo_count: float = 1.0, n_values: int | None = None):
        if not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
        if pseudo_count < 0:
            raise ValueError(f"pseudo_count must be >= 0, got {pseudo_count}")
        self.n_components = n_components
        self.pseudo_count = float(pseudo_count)
        self.n_values = n_values

    def sized_for(self, data: Any) -> "CategoricalMixture":
        """A copy whose ``n_values`` covers every code in ``data`` (a classifier fits one
        copy per class, and all classes' tables must have the same shape)."""
        x = self.check_data(data)
        return CategoricalMixture(self.n_components, self.pseudo_count, max(int(x.max()) + 1, self.n_values or 0))

    def structure(self, *args: Any, params: bool = False, **options: Any):
        """The latent class model's plate diagram: z → x_j for every feature j."""
        from probgen.graph import plate_diagram
        check_options("structure", options)
        n = len(args[0]) if args and hasattr(args[0], "__len__") else None
        return plate_diagram(
            {"z": {"kind": "latent", "distribution": "Categorical", "plates": ("data",)},
             "x": {"kind": "observed", "distribution": "Categorical", "plates": ("data", "features")}},
            [("z", "x")], {"data": n, "features": None, "components": self.n_components},
            {"weights": ["z"], "probs": ["x"]} if params else None)

    def check_data(self, data: Any) -> torch.Tensor:
        return check_codes(data, missing=True)

    def check_labels(self, labels: Any, x: torch.Tensor) -> torch.Tensor:
        """Partial labels ``(N,)`` long: a known component per row, −1 = unknown."""
        from probgen.data import check_labels
        return check_labels(labels, (len(x),), self.n_components).to(x.device)

    def init_params(self, data: torch.Tensor, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Uniform weights; ``probs`` from the data's value frequencies, perturbed per
        component by a Dirichlet draw (breaks the symmetry between components)."""
        from probgen.random import generator
        k, v = self.n_components, max(int(data.max()) + 1, self.n_values or 0)
        if bool((data < 0).any()):  # frequencies over each feature's observed cells
            oh = one_hot(data, v)
            freq = oh.sum(0) / oh.sum((0, 2)).clamp(min=1)[:, None] + 1e-3
        else:
            freq = one_hot(data, v).mean(0) + 1e-3
        g = generator(seed)
        noise = torch.ones(1, *freq.shape, dtype=torch.float64)
        if k > 1:  # Exp(1) = Gamma(1) draws: a Dirichlet(1) perturbation after normalising
            noise = -torch.log(torch.rand(k, *freq.shape, generator=g, dtype=torch.float64))
        probs = freq * noise
        probs = probs / probs.sum(-1, keepdim=True)
        return {"weights": torch.full((k,), 1.0 / k, dtype=torch.float64), "probs": probs}

    def num_free_params(self, params: dict) -> int:
        """The number of free parameters of a fit (for BIC / AIC): K − 1 weights and
        K D (V − 1) category probabilities, D and V read from ``params["probs"]`` (K, D, V)
        (V is sized by the data)."""
        k, d, v = params["probs"].shape
        return (k - 1) + k * d * (v - 1)

    def component_log_prob(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """``log weights_k + log p(x_n,obs | component k)``, ``(N, K)`` (missing cells left out)."""
        probs = params["probs"]
        x = check_codes(x, n_features=probs.shape[1], n_values=probs.shape[2], missing=True)
        logp = torch.log(probs)  # (K, D, V)
        x = x.to(probs.device)
        d = torch.arange(probs.shape[1], device=probs.device)
        gap = x < 0
        if bool(gap.any()):
            lp = logp[:, d, x.clamp(min=0)].masked_fill(gap, 0.0).sum(-1)  # a missing cell: log 1
        else:
            lp = logp[:, d, x].sum(-1)  # (K, N, D) -> (K, N)
        return lp.T + torch.log(params["weights"])

    def impute(self, params: dict, x: Any) -> torch.Tensor:
        """``x`` ``(N, D)`` codes with each missing cell (−1 / NaN) replaced by its most probable
        value given the row's observed cells, argmax_v Σ_k p(k | x_o) probs[k, d, v]."""
        lp = self.component_log_prob(params, x)
        x = check_codes(x, missing=True).to(lp.device)
        resp = torch.softmax(lp, -1)                                            # (N, K)
        best = torch.einsum("nk,kdv->ndv", resp, params["probs"]).argmax(-1)      # (N, D)
        return torch.where(x < 0, best, x)

    def log_prob(self, params: dict, x: Any) -> torch.Tensor:
        """Exact ``log p(x_n)``, ``(N,)``."""
        return torch.logsumexp(self.component_log_prob(params, x), -1)

    def sample(self, params: dict, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` rows drawn from the mixture: a component, then each feature's value.

        Args:
          params: ``weights`` (K,) and ``probs`` (K, F, V).
          n: the number of rows.
          seed: seeds the draws.

        Returns:
          An ``(n, F)`` int64 tensor.
        """
        from probgen.random import generator
        g = generator(seed)
        z = torch.multinomial(params["weights"], n, replacement=True, generator=g)
        p = params["probs"][z]  # (n, D, V)
        return torch.multinomial(p.reshape(-1, p.shape[-1]), 1, generator=g).reshape(n, -1)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["CategoricalMixture", torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        z = torch.randint(2, (60,), generator=g)
        x = torch.where(torch.rand(60, 4, generator=g) < 0.8, z[:, None] * 2, torch.randint(3, (60, 4), generator=g))
        return cls(2), x
