"""The result of fitting a declaration: parameters, history, evaluation, sampling, save/load."""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator

import pyro
import torch

from probgen import registry
from probgen.threads import limited

#: the file format `Fit.save` writes and `load` reads
FORMAT = "probgen.fit/2"


class Fit:
    """A fitted model: what `probgen.fit` returns (a value: fitting never changes another fit).

    Attributes:
      model: the declaration that was fitted (a copy of the one passed to ``pg.fit``).
      params: ``dict[str, Tensor]`` named as the declaration names them, each with the
        declaration's shape (a ``GaussianMixture(k, d)``: ``weights (k,)``, ``loc (k, d)``,
        ``scale_tril (k, d, d)``).
      history: list of per-step records, each with ``"step"`` and the key `objective`
        names (its value per example), e.g. ``{"step": i, "log_likelihood": ...}``.
      engine: the engine name that made the fit (``"em"``, ``"svi"``, ...).
      method: the method (algorithm) of that engine that made the fit (``"mixture"``, ...).
      state: engine-specific extras needed to evaluate or sample (posterior samples,
        a guide, persistent chains), saved with the fit.
      options: the options the fit was made with.

    Examples:
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.cat([torch.randn(50, 2, generator=g) - 3, torch.randn(50, 2, generator=g) + 3]).double()
        >>> fit = pg.fit(GaussianMixture(2, 2), x, engine="em", steps=50, seed=0, progress=False)
        >>> fit.engine, fit.method, fit.objective, fit.converged
        ('em', 'mixture', 'log_likelihood', True)
        >>> {name: tuple(p.shape) for name, p in fit.params.items()}
        {'weights': (2,), 'loc': (2, 2), 'scale_tril': (2, 2, 2)}
        >>> fit.log_prob(x).shape, fit.log_prob_kind
        (torch.Size([100]), 'exact')
        >>> fit.sample(5, seed=0).shape
        torch.Size([5, 2])
    """

    def __init__(self, model: Any, params: dict[str, torch.Tensor], history: list[dict] | None = None,
                 *, engine: str, method: str, state: dict | None = None, options: dict | None = None,
                 log_prob_kind: str | None = None, objective: str | None = None):
        self.model = model
        self.params = dict(params)
        self.history = list(history or [])
        self.engine = engine
        self.method = method
        self.state = dict(state or {})
        self.options = dict(options or {})
        self._log_prob_kind = log_prob_kind
        self._objective = objective

    def own_param_store(self) -> contextlib.AbstractContextManager:
        """Pyro's global param store holding this fit's own parameters (``state["param_store"]``,
        saved by `probgen.fit` from the store the fit was trained in) for the duration of
        a ``with`` block; outside it, and after it, the user's store is as it was.

        Returns:
          A context manager that yields the store's state dict
            (``{"params": ..., "constraints": ...}``).
        """
        return own_param_store(self.state.get("param_store"))

    # -- the method object that made this fit: evaluation and sampling go through it
    def _method(self) -> registry.Method:
        return registry.find_method(self.model, self.engine, self.method)

    @property
    def log_prob_kind(self) -> str:
        """``"exact"``, ``"bound"`` or ``"estimate"``: what `log_prob` returns."""
        return self._log_prob_kind or self._method().log_prob_kind

    @property
    def objective(self) -> str:
        """The ``history`` key of the fit's objective (``"log_likelihood"``, ``"elbo"``,
        ``"loss"``, ...), per example; set by the method that made the fit."""
        return self._objective or self._method().objective

    @property
    def converged(self) -> bool | None:
        """Whether the fit stopped because its objective's relative change fell below ``tol``
        (``True``), or it ran out of ``steps`` or a callback stopped it (``False``);
        ``None`` for fits not made by an iterative driver (EM, CAVI: `probgen.loops.iterative`).
        A Bayes'-rule classifier's is every class fit's together (``state["class_converged"]``)."""
        return self.state.get("converged")

    def log_prob(self, x: Any, seed: int = 0, **options: Any) -> torch.Tensor:
        """Per-example log-likelihood of ``x``; see `log_prob_kind`.

        Monte Carlo estimates and bounds use ``seed``, so the same call gives the same answer.

        Args:
          x: ``N`` examples in the form the declaration's ``check_data`` takes (a ``(N, D)``
            tensor, a list of sequences, of sentences, ...).
          seed: seeds a Monte Carlo estimate or bound (ignored by exact ones).
          **options: the method's evaluation options (``num_samples``, ...); an unknown one is
            a ``ValueError`` naming the known ones.

        Returns:
          A tensor of shape ``(N,)``: one log-likelihood (or bound / estimate) per example.
        """
        from probgen.random import seeded
        method = self._method()
        registry.check_named_options("log_prob", method.log_prob, options, ("fit", "x", "seed"))
        if "seed" in registry.named_options(method.log_prob, ("fit", "x")):  # a Monte Carlo estimate
            options["seed"] = seed
        exact = (self._log_prob_kind or method.log_prob_kind) == "exact"  # no randomness to seed
        with torch.no_grad(), limited(), self.own_param_store(), seeded(None if exact else seed):
            return method.log_prob(self, x, **options)

    def log_partition(self, method: str = "auto", **options: Any) -> Any:
        """log Z of an undirected model through the method that made the fit.

        Args:
          method: how to compute it: ``"auto"``, ``"exact"`` (enumeration) or ``"ais"``
            (annealed importance sampling, Neal 2001).
          **options: the method's options (e.g. the number of AIS runs).

        Returns:
          An object with ``.value`` (log Z) and ``.stderr`` (0 for an exact value).

        Raises:
          ValueError: the method that made the fit computes no partition function.
        """
        m = self._method()
        if not hasattr(m, "log_partition"):
            raise ValueError(f"the {self.engine!r} method {self.method!r} computes no partition function "
                             f"for {type(self.model).__name__}")
        with torch.no_grad(), limited(), self.own_param_store():
            return m.log_partition(self, method, **options)

    def sample(self, n: int, seed: int | None = None, **options: Any) -> Any:
        """``n`` draws from the fitted generative model.

        Args:
          n: the number of draws (a positive integer).
          seed: seeds the draws (``None``: torch's global generator).
          **options: the sampling options of the method that made the fit (e.g. ``warmup``
            for Boltzmann machines); an unknown one is a ``ValueError`` naming the known ones.

        Returns:
          ``n`` draws in the declaration's data form: a ``(n, D)`` tensor for vector data,
            a list of ``n`` sequences / sentences / trees for structured models.
        """
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        method = self._method()
        registry.check_named_options("sample", method.sample, options, ("fit", "n", "seed"))
        with torch.no_grad(), limited(), self.own_param_store():
            return method.sample(self, n, seed=seed, **options)

    def update(self, data: Any, steps: int | None = None, seed: int | None = None, progress: bool = True,
               **options: Any) -> "Fit":
        """Continue this EM fit on new ``data`` (Cappé & Moulines 2009 for the online case).

        An online EM fit (``pg.fit(..., online=True)``) goes on stepwise from its running
        sufficient statistics, its update count ``t`` (so ρ_t keeps decreasing) and the number
        of items it has seen. A batch EM fit keeps no statistics of its data: it is refit by
        batch EM on ``data`` alone, from its parameters (``pg.fit(fit.model, data,
        init=fit.params, ...)`` with its options) — the old data count only through the start.
        Methods without such a continuation refuse with a ``ValueError``.

        Args:
          data: the new data: a data set; for an online fit also an iterator of chunks or a
            callable returning a fresh one (as ``pg.fit(..., online=True)`` takes).
          steps: online: passes over ``data`` (default 1 for an iterator, else 5); batch: EM
            iterations (the method's default).
          seed: seeds the minibatch order (online) or the refit.
          progress: show a progress bar.
          **options: online: ``batch_size``, ``t0``, ``kappa``, ``tol``, ``callback`` to change;
            batch: any option of the method (its fit's own are kept otherwise).

        Returns:
          The continued `Fit`; this one is left as it is (a fit is a value).

        Examples:
          >>> import torch, probgen as pg
          >>> from probgen.models import GaussianMixture
          >>> x = torch.randn(400, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
          >>> fit = pg.fit(GaussianMixture(2, 2), iter([x[:200], x[200:]]), online=True, seed=0, progress=False)
          >>> fit.state["online"]["t"]
          2
          >>> fit.update(iter([x[:100]]), progress=False).state["online"]["t"]
          3
        """
        method = self._method()
        if not hasattr(method, "update"):
            raise ValueError(f"the {self.engine!r} method {self.method!r} cannot continue a fit on new data "
                             "(Fit.update is for EM fits of GaussianMixture, HMM and CategoricalMixture)")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        with self.own_param_store():
            return method.update(self, data, steps=steps, seed=seed, progress=progress, **options)

    def to(self, device: Any) -> "Fit":
        """A copy of the fit on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a
        ``torch.device``): its ``params``, its declaration's networks and tensors and the tensors
        of its ``state`` (posterior draws, the Pyro param store) moved there; this fit is left as
        it is.

        Args:
          device: where to move the copy.

        Returns:
          A new `Fit`.

        Raises:
          ValueError: an absent device, naming the devices there are
            (`probgen.devices.check_device`).
        """
        from probgen.devices import fit_to
        return fit_to(self, device)

    def save(self, path: str | os.PathLike) -> None:
        """Write the fit to ``path`` atomically (a temporary file, then a rename), in the format
        ``"probgen.fit/2"``: tensors and plain data only (`probgen.plain`), which
        `load` reads with ``torch.load(weights_only=True)``. The declaration is written as
        its class and constructor arguments (with its networks' ``state_dict``), a user program
        as its importable ``module:qualname``; state entries named ``*_cache`` are left out
        (recomputed on use).

        Args:
          path: the file to write.

        Raises:
          ValueError: something in the fit cannot be written so (a lambda, a program defined
            in ``__main__``, ...), naming it; raised before the file is touched.
        """
        from probgen.plain import to_plain, write_file
        state = {k: v for k, v in self._method().save_state(self).items() if not k.endswith("_cache")}
        payload = {"format": FORMAT, "model": to_plain(self.model, "the model"),
                   "params": to_plain(self.params, "fit.params"), "history": to_plain(self.history, "fit.history"),
                   "engine": self.engine, "method": self.method, "state": to_plain(state, "fit.state"),
                   "options": to_plain(self.options, "fit.options"), "log_prob_kind": self._log_prob_kind,
                   "objective": self.objective}
        write_file(os.fspath(path), payload)

    # -- MCMC fits (made by probgen.loops.mcmc): state["draws"] {site: (chain, draw, ...)},
    #    state["sample_stats"] {stat: (chain, draw)}
    def _chains(self) -> tuple[dict, dict]:
        if "draws" not in self.state or "sample_stats" not in self.state:
            raise ValueError(f"diagnostics and to_arviz need a fit made by the MCMC driver (engine 'mcmc': "
                             f"NUTS, Gibbs); this fit was made by the {self.engine!r} method {self.method!r}")
        return self.state["draws"], self.state["sample_stats"]

    def diagnostics(self) -> Any:
        """Convergence diagnostics of an MCMC fit: a table (a list of row dicts whose ``str``
        prints it) with one row per scalar entry of every kept site (``"loc[1,0]"``) and one
        for the sampler's objective statistic (``potential_energy``, ``log_likelihood``, …):
        ``mean``, ``sd``, ``mcse`` (of the mean), ``ess`` (bulk) and ``r_hat``
        (rank-normalised split R-hat, Vehtari et al. 2021; `probgen.diagnostics`).
        Needs at least 4 kept draws per chain.

        Returns:
          The table, a `probgen.diagnostics.Diagnostics`.

        Raises:
          ValueError: the fit was not made by the MCMC driver.
        """
        from probgen.diagnostics import summary
        draws, stats = self._chains()
        tracked = dict(draws)
        if self.objective in stats and self.objective not in tracked:
            tracked[self.objective] = stats[self.objective]
        return summary(tracked)

    def to_arviz(self) -> Any:
        """The draws of an MCMC fit as an ``arviz.InferenceData``: ``posterior`` with every
        kept site shaped ``(chain, draw, ...)``, ``sample_stats`` with the sampler's per-draw
        statistics (NUTS: ``step_size``, ``accept_prob``, ``diverging``, ``potential_energy``).

        Returns:
          An ``arviz.InferenceData``.

        Raises:
          ValueError: the fit was not made by the MCMC driver, or ArviZ is not installed
            (``pip install probgen[arviz]``).
        """
        draws, stats = self._chains()
        try:
            import arviz
        except ImportError:
            raise ValueError("to_arviz needs ArviZ: pip install 'probgen[arviz]' (or pip install arviz)") from None
        posterior = {k: v.detach().cpu().numpy() for k, v in draws.items()}
        sample_stats = {k: v.detach().cpu().numpy() for k, v in stats.items()}
        with warnings.catch_warnings():
            # a Gibbs fit's "log_likelihood" statistic is the complete-data log-likelihood of each
            # draw, not ArviZ's pointwise log-likelihood group: ArviZ's note on it does not apply
            warnings.filterwarnings("ignore", message="log_likelihood variable found in sample_stats")
            return arviz.from_dict(posterior=posterior, sample_stats=sample_stats or None)

    def __repr__(self) -> str:
        last = self.history[-1] if self.history else {}
        return (f"Fit({self.model!r}, engine={self.engine!r}, method={self.method!r}, "
                f"steps={len(self.history)}, last={last})")


@contextlib.contextmanager
def own_param_store(saved: dict | None = None) -> Iterator[dict]:
    """Run a block in a param store of its own: empty, or a copy of ``saved`` (Pyro's
    ``{"params": {name: unconstrained}, "constraints": {name: constraint}}`` state), so that
    no fit reads or changes another's parameters. Yields the dict that holds the block's
    final state when it ends."""
    saved = saved or {"params": {}, "constraints": {}}
    state = {"params": dict(saved["params"]), "constraints": dict(saved["constraints"])}
    with pyro.get_param_store().scope(state):
        yield state


def load(path: str | os.PathLike) -> Fit:
    """Read a fit written by `Fit.save`. The file is read with
    ``torch.load(weights_only=True)``, which builds only tensors and plain data, so loading
    never runs code from the file; anything that is not a ``"probgen.fit/2"`` file (a pickle
    of other objects, the old format 1) is a ``ValueError``. The declaration is rebuilt from
    its constructor arguments and a user program imported by its saved name (a ``ValueError``
    says which name could not be imported), without disturbing the caller's random state.

    Args:
      path: a file written by `Fit.save`.

    Returns:
      The fit (a `Fit`), equal to the saved one: bit-identical ``params``, ``log_prob(x)``
        and ``sample(n, seed)``.

    Raises:
      ValueError: the file is missing, not a ``"probgen.fit/2"`` file, or damaged.

    Examples:
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0)).double()
        >>> fit = pg.fit(GaussianMixture(2, 2), x, steps=5, seed=0, progress=False)
        >>> fit.save("gmm.fit")
        >>> again = pg.load("gmm.fit")
        >>> torch.equal(again.params["loc"], fit.params["loc"]), torch.equal(again.log_prob(x), fit.log_prob(x))
        (True, True)
    """
    from probgen.plain import from_plain, read_file
    path = os.fspath(path)
    payload = read_file(path, FORMAT, "probgen fit file",
                        hint="a pickle of Python objects, or a fit saved by an older probgen in format 1: "
                             "refit and save it again", missing="saved fit")
    where = f"the fit file {path}"
    try:
        with torch.random.fork_rng(devices=[]):  # rebuilding declarations may draw initial weights
            model = from_plain(payload["model"], where)
            fit = Fit(model, from_plain(payload["params"], where), from_plain(payload["history"], where),
                      engine=payload["engine"], method=payload["method"],
                      options=from_plain(payload["options"], where), log_prob_kind=payload["log_prob_kind"],
                      objective=payload["objective"])
            fit.state = fit._method().load_state(model, from_plain(payload["state"], where))
    except (KeyError, TypeError, AttributeError, IndexError) as exc:  # plain data, but not what save writes
        raise ValueError(f"{path} is a damaged probgen fit file ({type(exc).__name__}: {exc})") from None
    return fit
