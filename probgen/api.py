"""The public entry points: ``fit``, ``resume``, ``infer``, ``engines``, ``compatible``, ``load``."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Any

import torch

from probgen import checkpoint as checkpoints
from probgen import devices, registry
from probgen import distributed as dist
from probgen.data import has_missing, is_stream
from probgen.fit import Fit, load, own_param_store  # noqa: F401  (re-exported)
from probgen.random import seeded
from probgen.threads import limited, num_threads, set_num_threads  # noqa: F401  (re-exported)

engines = registry.engines
compatible = registry.compatible


def fit(model: Any, data: Any = None, engine: str | None = None, steps: int | None = None,
        seed: int | None = None, init: dict | None = None, progress: bool = True, device: Any = None,
        checkpoint: Any = None, checkpoint_every: int | None = None, distributed: bool | None = None,
        **options: Any) -> Fit:
    """Fit ``model`` to ``data`` with ``engine`` (a name; ``None`` = the model's default).

    Args:
      model: a probgen declaration or a Pyro function ``fn(data)``.
      data: the model's data (its ``check_data`` states the expected form).
      steps: the iteration budget (EM iterations, SVI steps, MCMC samples after
        warm-up, epochs for contrastive divergence); ``None`` = the method's default.
      seed: seeds all randomness (initialisation, minibatches, sampling).
      init: starting parameters, named as in ``Fit.params``.
      progress: show a progress bar on long runs (only on a terminal).
      device: ``None`` (the default: where the data are, as ever), ``"cpu"``, ``"cuda"``,
        ``"cuda:1"``, ``"mps"`` or a ``torch.device`` (`probgen.devices`): the data,
        ``init`` and the declaration's networks are moved there once and the method runs there;
        an absent device, or one the method's kernels do not run on, is a ``ValueError``.
      checkpoint: a file to write the fit's state to (`probgen.checkpoint`), every
        ``checkpoint_every`` steps (``None``: only at the end) and at the end, atomically;
        `resume` continues from it. Only methods whose loop saves its state take it.
      distributed: ``None`` (the default): data-parallel when launched by ``torchrun`` (or in an
        initialised process group of several processes), every rank taking its contiguous block
        of the rows, or passing its own part as ``pg.distributed.Shard(rows)``
        (`probgen.distributed`); ``False``: a local fit on this process's data; ``True``:
        data-parallel or a ``ValueError``. The returned fit is the same on every rank.
      **options: engine options (``tol``, ``n_init``, ``lr``, ``batch_size``, ...); an unknown
        one is a ``ValueError`` naming the known ones, raised before any work.

    Returns:
      The fitted model, a `Fit`: ``params`` named and shaped as the declaration's, ``history`` (one record
        per step, its objective per example), ``log_prob(x)`` of shape ``(N,)``, ``sample(n)``.

    Raises:
      ValueError: bad data (naming the expected shape), an unknown engine or option, a bad
        ``steps`` / ``init`` / ``device`` / ``checkpoint``.

    Examples:
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.cat([torch.randn(50, 2, generator=g) - 3, torch.randn(50, 2, generator=g) + 3]).double()
        >>> fit = pg.fit(GaussianMixture(2, 2), x, engine="em", steps=50, seed=0, progress=False)
        >>> fit.converged, fit.objective, fit.params["loc"].shape
        (True, 'log_likelihood', torch.Size([2, 2]))
        >>> sorted(fit.params["loc"][:, 0].round().tolist())
        [-3.0, 3.0]
    """
    # a fit is a value: it trains its own copy of the declaration (neural declarations hold
    # networks that training would otherwise change in place) in its own Pyro param store
    model = copy.deepcopy(registry.as_declaration(model))
    method = registry.find_method(model, engine)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    known = method.fit_options(model)
    if "online" in options and "online" not in known:
        online = [f"{m.engine} {m.name!r}" for e in registry.engines() for m in registry.methods(e)
                  if m.accepts(model) and "online" in m.fit_options(model)]
        raise ValueError(f"the {method.engine!r} method {method.name!r} for {type(model).__name__} has no online "
                         f"form (online=); methods that do: {online or 'none for this model'}")
    registry.check_options(method.engine, {k: v for k, v in options.items() if k not in known}, known)
    dev = devices.check_device(device)
    devices.check_method(method, dev)
    path, every = checkpoints.check_options(method, checkpoint, checkpoint_every)
    ctx = dist.context(distributed, dev)
    stream = options.get("online") is True and is_stream(data)
    if options.get("online") is True and ctx is not None:
        raise ValueError("online EM runs on one process (its minibatch updates are sequential): pass "
                         "distributed=False, or fit by batch EM, which runs data-parallel")
    if stream and path is not None:
        raise ValueError("a checkpoint of an online fit needs data it can check on resume: pass an in-memory "
                         "data set (not an iterator or a callable of chunks), or drop checkpoint=")
    with ctx.guard() if ctx is not None else contextlib.nullcontext():  # a rank's bad data ends the others
        data, seed = (data, seed) if stream else _distribute(ctx, model, method, data, seed)
    if init is not None:  # a stream's chunks are the method's to check: no shapes from the data here
        init = _check_init(model, method, init, None if stream else data, shapes=not stream)
    ck = None
    if path is not None:  # the call as it is now, before training changes the declaration's networks
        call = checkpoints.record_call(model, method, data, steps=steps, seed=seed, init=init,
                                       options=options, device=dev)
        if ctx is not None:  # rank 0 writes the file; pg.resume checks every rank's data against it
            call = {**call, "world_size": ctx.world_size, "data": ctx.gather(call["data"])}
        ck = checkpoints.Checkpoint(path, every, {**call, "every": every})
    return _run(model, method, data, steps, seed, init, progress, options, dev, ck, ctx)


def _distribute(ctx: dist.Context | None, model: Any, method: registry.Method, data: Any,
                seed: int | None) -> tuple[Any, int | None]:
    """The checked data this rank fits and the seed every rank uses: under a data-parallel
    ``ctx``, a method that runs data-parallel (``Method.parallel == "data"``) gets this rank's
    block of the rows (or its `Shard`), any other the whole data on
    every rank; the seed is rank 0's (drawn there when ``None``), so that every rank draws alike."""
    shard = isinstance(data, dist.Shard)
    if ctx is None:
        if shard:
            raise ValueError("pg.distributed.Shard is one rank's part of the data of a data-parallel fit; "
                             "this fit is local (no torchrun / process group, or distributed=False): "
                             "pass the whole data")
        return _checked(model, method, data), seed
    what = f"the {method.engine!r} method {method.name!r} for {type(model).__name__}"
    if shard and method.parallel != "data":
        raise ValueError(f"{what} does not run data-parallel, so every rank needs the whole data: "
                         "pass it, not a Shard")
    with ctx.guard():  # a rank whose rows are refused ends the others with its error
        data = _checked(model, method, data.rows if shard else data)
    if method.parallel == "data" and not shard:
        data = ctx.shard(data)
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    return data, ctx.broadcast(seed)


def _checked(model: Any, method: registry.Method, data: Any) -> Any:
    """``model.check_data(data)``, refused where it has missing cells the method cannot use."""
    data = model.check_data(data)
    if not method.missing_values and has_missing(data):
        raise ValueError(f"the data have missing cells (NaN), which the {method.engine!r} method {method.name!r} "
                         f"for {type(model).__name__} does not handle; methods that do: "
                         f"{sorted({m.engine for e in registry.engines() for m in registry.methods(e) if m.missing_values and m.accepts(model)})}")
    return data


def resume(path: Any, data: Any = None, *, progress: bool = True, callback: Any = None) -> Fit:
    """Continue the fit whose checkpoint is at ``path`` (written by ``pg.fit(...,
    checkpoint=path)``) on the same ``data``, to its original budget; returns the `Fit`
    the uninterrupted ``pg.fit`` call would have returned (on CPU, bit for bit). The call —
    declaration, engine, steps, seed, init, options, device — is the file's; it goes on writing
    checkpoints to ``path``. ``callback`` (not saved in the file) is given to the method again
    where it takes one.

    A data-parallel fit's checkpoint (`probgen.distributed`) is resumed the same way, on
    every rank of a launch with as many ranks as wrote it (each passing the whole data, or its
    own ``pg.distributed.Shard`` as before): every rank reads the same file and continues from
    its own saved state; another number of ranks is a ``ValueError``.

    Args:
      path: the checkpoint file (`probgen.checkpoint`).
      data: the data the fit was started on (checked against the file's SHA-256 fingerprint).
      progress: show a progress bar (not saved in the file).
      callback: ``callback(record)`` after each step, as for `fit` (not saved in the file).

    Returns:
      The fit (a `Fit`) the uninterrupted call returns.

    Raises:
      ValueError: other data than the fit's, or a file that is not a probgen checkpoint
        (foreign, truncated, damaged), or a data-parallel checkpoint resumed on another
        number of ranks.

    Examples:
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> x = torch.randn(60, 2, generator=torch.Generator().manual_seed(0)).double()
        >>> full = pg.fit(GaussianMixture(2, 2), x, steps=10, seed=0, tol=None, progress=False,
        ...               checkpoint="gmm.ckpt", checkpoint_every=5)
        >>> again = pg.resume("gmm.ckpt", x, progress=False)  # as if the first call had died
        >>> torch.equal(again.params["loc"], full.params["loc"]), len(again.history)
        (True, 10)
    """
    from probgen.plain import from_plain
    path = checkpoints.check_path(path)
    payload = checkpoints.read(path)
    where = f"the checkpoint {path}"
    try:
        call = payload["call"]
        with torch.random.fork_rng(devices=[]):  # rebuilding a declaration may draw initial weights
            model = from_plain(call["model"], where)
        method = registry.find_method(model, call["engine"], call["method"])
        options, init, steps, seed = from_plain(call["options"], where), from_plain(call["init"], where), \
            call["steps"], call["seed"]
        dev = devices.check_device(call["device"])
        ck = checkpoints.Checkpoint(path, call["every"], call, saved=payload)
        expected, world = call["data"], call.get("world_size", 1)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:  # plain data, but not what fit writes
        raise ValueError(f"{path} is a damaged probgen checkpoint file ({type(exc).__name__}: {exc})") from None
    if callback is not None:
        if "callback" not in method.fit_options(model):
            raise ValueError(f"the {method.engine!r} method {method.name!r} takes no callback")
        options["callback"] = callback
    ctx = dist.context(None, dev)
    if (1 if ctx is None else ctx.world_size) != world:
        raise ValueError(f"the fit in {path} ran on {world} rank{'s' * (world > 1)}; resume it under a launch "
                         f"of {world} (torchrun --nproc-per-node {world} ...)" if world > 1 else
                         f"the fit in {path} ran in one process; resume it in one process (outside torchrun)")
    if ctx is None:
        data = model.check_data(data)
    else:
        with ctx.guard():
            data, _ = _distribute(ctx, model, method, data, seed)
            expected = expected[ctx.rank]
    if expected is not None and checkpoints.fingerprint(data) != expected:
        raise ValueError(f"the data differ from those the fit in {path} was started on: resume it with the "
                         "same data")
    return _run(model, method, data, steps, seed, init, progress, options, dev, ck, ctx)


def _run(model: Any, method: registry.Method, data: Any, steps: int | None, seed: int | None,
         init: dict | None, progress: bool, options: dict, dev: torch.device | None,
         ck: checkpoints.Checkpoint | None, ctx: dist.Context | None = None) -> Fit:
    """Run a checked call of ``method`` (from `fit` or `resume`): moved to ``dev``,
    seeded, single-threaded, in its own param store, with ``ck`` the active checkpoint."""
    if dev is not None:
        data, init = devices.to_device(data, dev), devices.to_device(init, dev)
        devices.move_declaration(model, dev)
    # off the CPU, the tensors a method makes are made on the device; on the CPU nothing is
    # set (torch's device mode intercepts every call, and "cpu" is the default already)
    on = dev if dev is not None and dev.type != "cpu" else contextlib.nullcontext()
    # no checkpoint of its own: the caller's (an in-memory Hook) stays active
    active = checkpoints.activate(ck) if ck is not None else contextlib.nullcontext()
    if ctx is not None:  # the loops read how this method runs data-parallel from the context
        ctx = dataclasses.replace(ctx, parallel=method.parallel)
    with dist.active(ctx), seeded(seed), limited(), own_param_store() as store, active, on:
        result = method.fit(model, data, steps=steps, seed=seed, init=init, progress=progress, **options)
    if store["params"]:  # e.g. an SVI guide's parameters, read back when the fit is evaluated
        result.state["param_store"] = {"params": {k: v.detach().clone() for k, v in store["params"].items()},
                                       "constraints": store["constraints"]}
    return result


def infer(model_or_fit: Any, data: Any = None, query: str = "marginals", engine: str | None = None,
          distributed: bool | None = None, **options: Any) -> Any:
    """Posterior queries: ``query="marginals"`` (posterior marginals) or ``"map"``
    (most probable assignment); families add their own (``"encode"``, ...).

    With a `Fit` the fitted parameters are used; with a declaration, its own
    (declared) parameters. ``engine``: the engine that answers; ``None`` = ``"exact"`` where
    the exact engine takes the model, else (a VAE's ``query="encode"``, say) the engine that
    made the fit. A named engine answers itself or refuses: ``engine="exact"`` never hands
    the query to an approximate engine. Options are the answering method's (checked by the
    core: an unknown one is a ``ValueError``).

    ``distributed``: as for `fit` — ``None`` (the default): under ``torchrun`` (a
    process group of several processes) a query the method answers row by row
    (``Method.row_queries``: a Bayesian network's marginals / MAP over many evidence rows, a
    grammar's parses of many sentences, an HMM's paths / marginals of many sequences) is
    answered by each rank for its contiguous block of the rows and the answers are gathered
    and joined in order, so that every rank returns the whole answer; any other query runs
    whole on every rank. ``False``: answered here, whole; ``True``: split, or a ``ValueError``
    without a process group. Every rank passes the whole data.

    Args:
      model_or_fit: a `Fit` or a declaration.
      data: the evidence (a Bayesian network's ``{variable: [state, ...]}`` rows, an HMM's
        sequences, a grammar's sentences, ...).
      query: ``"marginals"``, ``"map"`` or a family's own query.
      engine: the answering engine; ``None`` as above.
      distributed: as above.
      **options: the answering method's options.

    Returns:
      The answer in the family's form; a Bayesian network's ``"marginals"`` are
        ``{variable: (N, card) tensor}`` for the ``N`` evidence rows, its ``"map"``
        ``{variable: [state, ...]}``.

    Raises:
      ValueError: an unknown query, engine or option, or an engine that cannot answer.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import BayesianNetwork
        >>> bn = BayesianNetwork({
        ...     "rain": {"states": ["no", "yes"], "parents": [], "cpt": [0.8, 0.2]},
        ...     "wet": {"states": ["no", "yes"], "parents": ["rain"], "cpt": [[0.9, 0.1], [0.2, 0.8]]}})
        >>> pg.infer(bn, {"wet": ["yes"]})["rain"].round(decimals=4).tolist()  # Bayes' rule: .16 / .24
        [[0.3333, 0.6667]]
        >>> pg.infer(bn, {"wet": ["yes"]}, query="map")
        {'rain': ['yes']}
    """
    ctx = dist.context(distributed)
    if isinstance(model_or_fit, Fit):
        with limited(), model_or_fit.own_param_store():
            return _infer(model_or_fit, data, query, engine, options, ctx)
    with limited(), own_param_store():
        return _infer(model_or_fit, data, query, engine, options, ctx)


def _infer(model_or_fit: Any, data: Any, query: str, engine: str, options: dict,
           ctx: dist.Context | None = None) -> Any:
    if isinstance(model_or_fit, Fit):
        model, params = model_or_fit.model, model_or_fit.params
    else:
        model, params = registry.as_declaration(model_or_fit), None
    method = None
    if engine is None:
        method = next((m for m in registry.methods("exact") if m.accepts(model)), None)
        engine = "exact" if method is not None or not isinstance(model_or_fit, Fit) else model_or_fit.engine
    if method is None:
        method = registry.find_method(model, engine)
    registry.check_named_options(f"{query!r} query", method.infer, options, _INFER_ARGS + ("fit",))
    if isinstance(model_or_fit, Fit) and "fit" in registry.named_options(method.infer, _INFER_ARGS):
        options["fit"] = model_or_fit  # a method that answers from the fit's state (a guide, draws)
    if method.queries and query not in method.queries:
        raise ValueError(f"engine {engine!r} answers queries {list(method.queries)} on "
                         f"{type(model).__name__}, not {query!r}")
    if isinstance(data, dist.Shard):
        raise ValueError("pg.infer takes the whole data on every rank (it splits the rows of a row-wise "
                         "query itself), not a pg.distributed.Shard")
    if ctx is not None and query in method.row_queries:
        split = method.query_rows(model, data, query, options)  # on the whole data: alike on every rank
        if split is not None:
            return _infer_rows(ctx, method, model, params, query, *split)
    return method.infer(model, params, data, query, **options)


def _infer_rows(ctx: dist.Context, method: registry.Method, model: Any, params: dict | None, query: str,
                rows: Any, options: dict) -> Any:
    """A row-wise query under ``ctx``: this rank answers its contiguous block of ``rows``, the
    blocks' answers are gathered (one collective) and joined in rank order — the whole answer,
    the same on every rank. Fewer rows than ranks are answered whole everywhere (nothing to split)."""
    from probgen.data import n_items, take
    n = n_items(rows)
    if n < ctx.world_size:
        return method.infer(model, params, rows, query, **options)
    start, stop = ctx.block(n)
    with dist.active(ctx):  # a rank that fails ends the others with its error
        part = method.infer(model, params, take(rows, torch.arange(start, stop)), query, **options)
        return method.join_answers(ctx.gather(part), query)


_INFER_ARGS = ("model", "params", "data", "query")


def _check_init(model: Any, method: registry.Method, init: Any, data: Any,
                shapes: bool = True) -> dict[str, torch.Tensor]:
    """``init`` as tensors, checked once for every method: a dict, finite, refused by a method
    that does not start from parameters, and — where the declaration can state its parameters
    (``param_shapes()`` or ``init_params``) — only its parameter names, each with its shape."""
    if not isinstance(init, dict):
        raise ValueError(f"init must be a dict of parameter tensors, got {type(init).__name__}")
    what = f"the {method.engine!r} method {method.name!r} for {type(model).__name__}"
    if not method.accepts_init:
        raise ValueError(f"{what} does not start from parameters, so it cannot use init"
                         + (f" ({method.init_hint})" if method.init_hint else ""))
    out = {}
    for k, v in init.items():
        try:
            t = torch.as_tensor(v)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"init[{k!r}] must be a tensor or array, got {type(v).__name__}") from None
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"init[{k!r}] contains NaN or inf")
        out[k] = t
    shapes = _param_shapes(model, data) if shapes or hasattr(model, "param_shapes") else None
    if shapes is not None:
        unknown = sorted(set(out) - set(shapes))
        if unknown:
            raise ValueError(f"init names {unknown}, which are not parameters of {type(model).__name__}; "
                             f"parameters: {sorted(shapes)}")
        for k, t in out.items():
            if tuple(t.shape) != tuple(shapes[k]):
                raise ValueError(f"init[{k!r}] has shape {tuple(t.shape)}; {type(model).__name__} "
                                 f"expects {tuple(shapes[k])}")
    return out


def _param_shapes(model: Any, data: Any) -> dict[str, tuple[int, ...]] | None:
    """The declaration's parameter shapes: ``param_shapes()`` where it states them, else the
    shapes of a start from ``init_params`` (seeded and with the caller's random state restored,
    so checking ``init`` draws nothing from the fit's stream); ``None`` where it has neither
    (a user program: its method checks names against the traced ``pyro.param`` sites)."""
    if hasattr(model, "param_shapes"):
        return {k: tuple(v) for k, v in model.param_shapes().items()}
    try:
        with seeded(0):
            start = model.init_params(data, seed=0)
    except NotImplementedError:
        return None
    return {k: tuple(torch.as_tensor(v).shape) for k, v in start.items()}
