"""Generative classification by Bayes' rule: any class-conditional density model
``p(x | y = c)`` (a declaration with an exact ``log_prob(params, x)``: a Gaussian
mixture, a mixture of categoricals, a Bayesian network, ...) fitted once per class,
with class weights ``P(y = c)`` from the class frequencies, gives

    P(y = c | x) = P(y = c) p(x | c) / sum_c' P(y = c') p(x | c')

(Ng & Jordan 2002 compare such classifiers with their discriminative counterparts).

Data ``(X, y)``: ``X`` in the form the class-conditional takes, ``y`` ``(N,)`` class codes.
Parameters: ``weights`` ``(C,)`` and, for each class ``c``, the class-conditional's
parameters named ``c<c>.<name>``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probgen.declarations import Declaration
from probgen.registry import check_options
from probgen.models.categorical_mixture import CategoricalMixture, check_codes


class GenerativeClassifier(Declaration):
    """``P(y | x)`` from per-class fits of ``class_conditional`` (a declaration).

    Any engine that fits the class-conditional fits the classifier
    (``pg.fit(GenerativeClassifier(GaussianMixture(2, dim=4)), (X, y), engine="em")``); queries
    (``pg.infer(fit, X, query="map" | "marginals")``) use the exact class posterior.
    ``fit_options`` are passed to every per-class fit.

    Args:
      class_conditional: the declaration fitted to each class's rows.
      **fit_options: options of every per-class fit.

    Bayes' rule, p(y | x) ∝ p(y) p(x | y) (Ng & Jordan 2002, "On discriminative vs.
    generative classifiers"). Data: ``(X, y)``, ``y`` the ``(N,)`` classes 0..C−1;
    ``pg.infer(fit, X, query="marginals")`` is ``(N, C)``.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import CategoricalMixture, GenerativeClassifier
        >>> model, (X, y) = GenerativeClassifier.example(seed=0)  # 60 rows, 3 binary features
        >>> clf = GenerativeClassifier(CategoricalMixture(2))
        >>> fit = pg.fit(clf, (X, y), steps=50, seed=0, progress=False)
        >>> pg.infer(fit, X[:4]).shape, pg.infer(fit, X[:4], query="map").shape
        (torch.Size([4, 2]), torch.Size([4]))
    """

    short_name = "bayes_classifier"
    _repr_fields = ("class_conditional",)

    def __init__(self, class_conditional: Declaration, **fit_options: Any):
        if not isinstance(class_conditional, Declaration) or not hasattr(class_conditional, "log_prob"):
            raise ValueError("the class-conditional must be a probgen declaration with an exact log_prob "
                             f"(params, x), got {type(class_conditional).__name__}")
        self.class_conditional = class_conditional
        self.fit_options = dict(fit_options)
        self.default_engine = getattr(class_conditional, "default_engine", None)

    def structure(self, *args: Any, params: bool = False, **options: Any):
        """The class y as the parent of the class-conditional's graph (its observed and
        latent nodes); the class-conditional is drawn without data."""
        from probgen.graph import graph
        check_options("structure", options)
        g = graph(self.class_conditional, params=params).copy()
        roots = [v for v, k in g.nodes(data="kind") if k in ("observed", "latent")
                 and not any(g.nodes[u].get("kind") in ("observed", "latent") for u in g.predecessors(v))]
        g.add_node("y", kind="observed", distribution="Categorical", plates=())
        for v in roots:
            g.add_edge("y", v, directed=True)
        if params:
            g.add_node("weights", kind="param", plates=())
            g.add_edge("weights", "y", directed=True)
        return g

    def check_data(self, data: Any) -> tuple[Any, torch.Tensor]:
        if isinstance(data, dict) and set(data) == {"X", "y"}:
            data = (data["X"], data["y"])
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError("a classifier's data is a pair (X, y): X as the class-conditional takes it, "
                             "y an (N,) array of class codes 0..C-1")
        x = self.class_conditional.check_data(data[0])
        y = check_codes(np.asarray(data[1]).reshape(-1, 1), "y")[:, 0]
        if len(y) != len(x):
            raise ValueError(f"X has {len(x)} rows but y has {len(y)}")
        return x, y

    def split(self, params: dict) -> tuple[torch.Tensor, list[dict]]:
        """Class weights and the per-class parameter dicts."""
        w = params["weights"]
        per = [{} for _ in range(len(w))]
        for k, v in params.items():
            if k != "weights":
                c, _, name = k.partition(".")
                per[int(c[1:])][name] = v
        return w, per

    def class_log_joint(self, params: dict, x: Any) -> torch.Tensor:
        """``log P(y = c) + log p(x_n | c)``, ``(N, C)``."""
        w, per = self.split(params)
        x = self.class_conditional.check_data(x)
        return torch.stack([torch.log(w[c]) + self.class_conditional.log_prob(p, x) for c, p in enumerate(per)], -1)

    def class_log_posterior(self, params: dict, x: Any) -> torch.Tensor:
        """``log P(y = c | x_n)`` by Bayes' rule, normalised in log space.

        Args:
          params: the classifier's ``Fit.params``.
          x: ``N`` rows the class-conditional takes.

        Returns:
          An ``(N, C)`` tensor whose rows log-sum-exp to 0.
        """
        lj = self.class_log_joint(params, x)
        return lj - torch.logsumexp(lj, -1, keepdim=True)

    def log_prob(self, params: dict, data: Any) -> torch.Tensor:
        """``log P(x_n, y_n)``, ``(N,)``."""
        x, y = self.check_data(data)
        return self.class_log_joint(params, x)[torch.arange(len(y)), y]

    def sample(self, params: dict, n: int, seed: int | None = None) -> dict[str, Any]:
        """``{"X": ..., "y": (n,)}``: classes from ``weights``, features from each class's model."""
        from probgen.random import generator
        w, per = self.split(params)
        y = torch.multinomial(w, n, replacement=True, generator=generator(seed))
        xs = [None] * n
        parts = {}
        for c in torch.unique(y).tolist():
            idx = (y == c).nonzero()[:, 0]
            parts[c] = (idx, self.class_conditional.sample(per[c], len(idx), seed=None if seed is None else seed + c))
        if all(isinstance(p[1], torch.Tensor) for p in parts.values()):
            first = next(iter(parts.values()))[1]
            x = first.new_empty((n,) + tuple(first.shape[1:]))
            for idx, xc in parts.values():
                x[idx] = xc
            return {"X": x, "y": y}
        for idx, xc in parts.values():
            for k, i in enumerate(idx.tolist()):
                xs[i] = xc[k]
        return {"X": xs, "y": y}

    @classmethod
    def example(cls, seed: int = 0) -> tuple["GenerativeClassifier", tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(2, (60,), generator=g)
        x = torch.where(torch.rand(60, 3, generator=g) < 0.75, y[:, None], torch.randint(2, (60, 3), generator=g))
        return cls(CategoricalMixture(2)), (x, y)


class NaiveBayes(GenerativeClassifier):
    """Naive Bayes over discrete features: the generative classifier whose class-conditional
    is one product of categoricals (features independent given the class), Laplace-smoothed
    with ``pseudo_count``.

    Args:
      pseudo_count: Laplace smoothing of every count.

    Fitted in closed form by counting (Manning, Raghavan & Schütze 2008, ch. 13).
    Data: ``(X, y)`` with ``X`` an ``(N, F)`` integer tensor and ``y`` the ``(N,)`` classes.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import NaiveBayes
        >>> model, (X, y) = NaiveBayes.example(seed=0)  # 60 rows, 3 binary features, 2 classes
        >>> fit = pg.fit(NaiveBayes(), (X, y), progress=False)
        >>> posterior = pg.infer(fit, X[:4])  # p(y | x), rows summing to one
        >>> posterior.shape, posterior.sum(-1).round(decimals=6).tolist()
        (torch.Size([4, 2]), [1.0, 1.0, 1.0, 1.0])
    """

    short_name = "naive_bayes"
    _repr_fields = ("pseudo_count",)

    def __init__(self, pseudo_count: float = 1.0):
        super().__init__(CategoricalMixture(1, pseudo_count=pseudo_count))
        self.pseudo_count = pseudo_count

    def structure(self, *args: Any, params: bool = False, **options: Any):
        """y → x_j for every feature j (independent given the class)."""
        from probgen.graph import plate_diagram
        check_options("structure", options)
        return plate_diagram(
            {"y": {"kind": "observed", "distribution": "Categorical"},
             "x": {"kind": "observed", "distribution": "Categorical", "plates": ("features",)}},
            [("y", "x")], {"features": None}, {"weights": ["y"], "probs": ["x"]} if params else None)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["NaiveBayes", tuple[torch.Tensor, torch.Tensor]]:
        _, data = GenerativeClassifier.example(seed)
        return cls(), data
