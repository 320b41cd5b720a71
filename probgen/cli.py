"""The ``probgen`` command line: a thin layer over the public API.

  probgen list
  probgen fit MODEL --engine E [--data NAME|file.csv|file.npy] [--steps N] [--seed S] [--out DIR]
              [--set k=v ...] [--option k=v ...] [--nproc N]
  probgen sample DIR -n N -o FILE(.npy|.csv|.png)
  probgen graph MODEL -o FILE [--expand] [--params] [--data ...]
  probgen demo [--quick]
  probgen select MODEL --data FILE -k 1:10 [--criterion bic|aic|heldout] [--engine E] [--out FILE.png]

MODEL is a built-in short name (``gmm``), a class name (``GaussianMixture``) or
``path/to/file.py:function`` for your own Pyro program. Bad arguments print one line
and exit with code 2.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import warnings
from typing import Any

import probgen as pg
from probgen import registry


class UsageError(Exception):
    """A bad argument: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="probgen", description="Declare generative models, swap engines, draw structure.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="models, engines, which engines fit which models, and each method's "
                               "steps unit and history objective")
    f = sub.add_parser("fit", help="fit a model and save it")
    f.add_argument("model")
    f.add_argument("--engine", default=None)
    f.add_argument("--data", default=None, help="bundled dataset name, or a .csv / .npy file")
    f.add_argument("--steps", type=int, default=None)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", default="probgen-fit")
    f.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model constructor arguments, e.g. --set k=3 covariance=diag")
    f.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE",
                   help="engine options, e.g. --option lr=0.01 tol=None")
    f.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="fit data-parallel on N local processes, launched through torch.distributed.run "
                        "(torchrun); rank 0 writes the outputs")
    s = sub.add_parser("sample", help="draw from a saved fit")
    s.add_argument("fit_dir")
    s.add_argument("-n", type=int, default=16)
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--seed", type=int, default=0)
    g = sub.add_parser("graph", help="draw a model's structure")
    g.add_argument("model")
    g.add_argument("-o", "--output", required=True)
    g.add_argument("--expand", action="store_true", help="one node per unit / time step")
    g.add_argument("--params", action="store_true", help="show parameters as nodes")
    g.add_argument("--data", default=None)
    g.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    c = sub.add_parser("select", help="fit one model per size (-k) and compare them by BIC, AIC or "
                                      "held-out log-likelihood")
    c.add_argument("model")
    c.add_argument("--data", default=None, help="bundled dataset name, or a .csv / .npy file")
    c.add_argument("-k", default="1:10", help="the values to try: FIRST:LAST (inclusive) or a comma list")
    c.add_argument("--name", default="k", help="the constructor argument -k sets (default k)")
    c.add_argument("--criterion", default="bic", choices=("bic", "aic", "heldout"))
    c.add_argument("--engine", default=None)
    c.add_argument("--steps", type=int, default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default="select.png", help="the PNG of the criterion curve")
    c.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other constructor arguments")
    c.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE", help="engine options")
    d = sub.add_parser("demo", help="fit the Gaussian mixture on iris with em, svi and mcmc")
    d.add_argument("--quick", action="store_true", help="few steps (for tests)")
    d.add_argument("--out", default="probgen-demo")
    return p


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a ``ConvergenceWarning``, say) as one ``probgen: warning:`` line, like errors."""
    print(f"probgen: warning: {str(message).strip().splitlines()[0]}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    shown = warnings.showwarning
    warnings.showwarning = _warning_line
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = _parser().parse_args(argv)
        if getattr(args, "nproc", None) is not None and args.nproc != 1:
            return launch(argv, args.nproc)
        return {"list": cmd_list, "fit": cmd_fit, "sample": cmd_sample, "graph": cmd_graph,
                "demo": cmd_demo, "select": cmd_select}[args.command](args)
    except (UsageError, ValueError, RuntimeError, OSError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"probgen: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("probgen: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


# ---- helpers -------------------------------------------------------------------------

def launch(argv: list[str], nproc: int) -> int:
    """``probgen fit ... --nproc N``: the same command without ``--nproc`` on N local
    processes, through ``torch.distributed.run`` (each a rank of one gloo process group:
    ``pg.fit`` runs data-parallel, rank 0 prints and writes). The exit code is the launcher's."""
    import subprocess
    if nproc < 1:
        raise UsageError(f"--nproc must be a positive number of processes, got {nproc}")
    if "RANK" in os.environ:
        raise UsageError("--nproc launches the processes itself; under torchrun (RANK is set) drop --nproc")
    rest, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "probgen.cli", *rest]
    return subprocess.call(cmd)


def is_rank_zero() -> bool:
    """Whether this process writes a data-parallel command's outputs (rank 0, or a local run)."""
    import torch.distributed as dist
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def parse_settings(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` words as a dict, each value a Python literal where it parses as one."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def load_data(spec: str | None, model_cls: Any = None) -> Any:
    from probgen.data import DATASETS, load_dataset, read_file
    if spec is None:
        name = getattr(model_cls, "default_dataset", None)
        if name is None:
            raise UsageError("this model has no bundled default dataset; pass --data")
        spec = name
    if spec.endswith((".csv", ".npy")):
        return read_file(spec)
    if hasattr(model_cls, "load_named_data"):  # families with their own bundled data
        data = model_cls.load_named_data(spec)
        if data is not None:
            return data
    if spec in DATASETS:
        return load_dataset(spec)
    raise UsageError(f"unknown data {spec!r}: a bundled dataset {list(DATASETS)} or a .csv / .npy file")


def build_model(spec: str, data: Any, settings: dict) -> Any:
    """A declaration for MODEL: a built-in name, or path/to/file.py:function."""
    if ":" in spec and spec.split(":")[0].endswith(".py"):
        from probgen.declarations import load_program
        return load_program(spec)
    cls = registry.resolve_model_name(spec)
    try:
        return cls.for_data(data, **settings)
    except TypeError as exc:
        raise UsageError(f"bad --set for {cls.__name__}: {exc}") from None


def model_class(spec: str) -> Any:
    if ":" in spec and spec.split(":")[0].endswith(".py"):
        return None
    return registry.resolve_model_name(spec)


# ---- commands ------------------------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> int:
    print(compatibility_table())
    print()
    print(methods_table())
    return 0


def methods_table() -> str:
    """The methods (Markdown), as printed by ``probgen list`` and in the README: what one of
    ``steps`` is for each (``Method.steps_unit``), the ``history`` key of its objective
    (``Method.objective``) and whether it takes ``tol``. A method registered for several
    engines with the same description (the generative classifier's Bayes'-rule fit) is one row."""
    rows: dict[tuple, list[str]] = {}
    for engine in pg.engines():
        for m in registry.methods(engine):
            takes_tol = "tol" in registry.named_options(m.fit, ())
            key = (m.name, m.steps_unit, m.objective or "the class-conditional's", "yes" if takes_tol else "")
            rows.setdefault(key, []).append(engine)
    out = ["| engine | method | `steps` counts | `history` objective | `tol` |", "|---|---|---|---|---|"]
    every = pg.engines()
    for (name, unit, objective, tol), engines in rows.items():
        engines = ["any"] if engines == every else engines
        objective = f"`{objective}`" if objective.isidentifier() else objective
        out.append(f"| {', '.join(engines)} | `{name}` | {unit} | {objective} | {tol} |")
    return "\n".join(out)


def compatibility_table() -> str:
    """The models × engines table (Markdown), as printed by ``probgen list`` and in the README."""
    engines = pg.engines()
    rows = ["| model | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    for name, cls in sorted(registry.models().items(), key=lambda kv: kv[1].__name__):
        model, _ = cls.example(seed=0)
        ok = set(pg.compatible(model))
        marks = ["default" if e == cls.default_engine else ("yes" if e in ok else "") for e in engines]
        rows.append(f"| `{cls.__name__}` ({name}) | " + " | ".join(marks) + " |")
    return "\n".join(rows)


def cmd_fit(args: argparse.Namespace) -> int:
    cls = model_class(args.model)
    data = load_data(args.data, cls) if (args.data or cls is not None) else None
    model = build_model(args.model, data, parse_settings(args.set))
    options = parse_settings(args.option, "--option")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out names a folder to write fit.pt and history.png into; {args.out} is a file")
    fit = pg.fit(model, data, engine=args.engine, steps=args.steps, seed=args.seed, progress=True, **options)
    if not is_rank_zero():  # under torchrun every rank holds the same fit: rank 0 writes it
        return 0
    os.makedirs(args.out, exist_ok=True)
    fit.save(os.path.join(args.out, "fit.pt"))
    plot_history(fit, os.path.join(args.out, "history.png"))
    last = fit.history[-1] if fit.history else {}
    print(f"fitted {model!r} with {fit.engine}/{fit.method}: {len(fit.history)} steps, last {last}")
    print(f"saved {os.path.join(args.out, 'fit.pt')} and {os.path.join(args.out, 'history.png')}")
    return 0


def plot_history(fit: Any, path: str) -> int:
    """A PNG of ``fit.history``'s objective (``fit.objective``, per example) against the step,
    one line per chain or stage where the history has several; a closed-form fit (one
    record) is drawn as its one value, labelled so. Returns the number of points drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    key = fit.objective
    rows = [h for h in fit.history if isinstance(h.get(key), (int, float))]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    group = next((g for g in ("chain", "stage") if rows and g in rows[0]), None)
    lines: dict[Any, list[dict]] = {}
    for h in rows:
        lines.setdefault(h.get(group) if group else None, []).append(h)
    for name, hs in lines.items():
        steps = [h.get("step", i) for i, h in enumerate(hs)]
        ax.plot(steps, [h[key] for h in hs], marker="o" if len(hs) == 1 else None,
                label=None if name is None else f"{group} {name}")
    if len(lines) > 1:
        ax.legend(fontsize=7)
    if len(rows) == 1:
        ax.set_title(f"{type(fit.model).__name__} · {fit.engine} (closed form: one step)")
    elif not rows:
        what = "closed form: no iterations" if fit.state.get("closed_form") else f"the history records no {key!r}"
        ax.text(0.5, 0.5, what, ha="center", va="center")
    if len(rows) != 1:
        ax.set_title(f"{type(fit.model).__name__} · {fit.engine}")
    ax.set_xlabel(f"step ({fit._method().steps_unit})" if fit._method().steps_unit else "step")
    ax.set_ylabel(key.replace("_", " ") + " per example")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(rows)


def parse_values(spec: str) -> list[int]:
    """``-k`` of ``probgen select``: ``FIRST:LAST`` (inclusive) or ``a,b,c``, positive integers."""
    try:
        if ":" in spec:
            first, last = (int(x) for x in spec.split(":"))
            values = list(range(first, last + 1))
        else:
            values = [int(x) for x in spec.split(",")]
    except ValueError:
        raise UsageError(f"-k expects FIRST:LAST or a comma list of integers, got {spec!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"-k expects positive integers (FIRST <= LAST), got {spec!r}")
    return values


def cmd_select(args: argparse.Namespace) -> int:
    cls = model_class(args.model)
    if cls is None:
        raise UsageError("select needs a built-in model (its size is set by -k)")
    data = load_data(args.data, cls)
    settings = parse_settings(args.set)
    values = parse_values(args.k)
    fit_options = parse_settings(args.option, "--option")
    if args.steps is not None:
        fit_options["steps"] = args.steps
    result = pg.select(lambda v: build_model(args.model, data, {**settings, args.name: v}), data, values,
                       criterion=args.criterion, engine=args.engine, seed=args.seed, progress=False,
                       **fit_options)
    print(result.table)
    result.plot(args.out)
    print(f"best {args.name}={result.best_value} by {args.criterion}; saved {args.out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    path = os.path.join(args.fit_dir, "fit.pt") if os.path.isdir(args.fit_dir) else args.fit_dir
    if args.n <= 0:
        raise UsageError(f"-n must be positive, got {args.n}")
    fit = pg.load(path)
    x = fit.sample(args.n, seed=args.seed)
    if isinstance(x, dict):  # several sites (a classifier's X and y): one column block each
        import torch
        blocks = {k: torch.as_tensor(v).reshape(args.n, -1) for k, v in x.items()}
        print("columns: " + ", ".join(f"{k} ({v.shape[1]},)" for k, v in blocks.items()))
        x = torch.cat(list(blocks.values()), 1)
    if args.output.endswith(".png"):
        from probgen.plots import save_samples_png
        save_samples_png(x, args.output)
    else:
        from probgen.data import write_file
        write_file(args.output, x)
    print(f"wrote {args.n} samples to {args.output}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from probgen.declarations import Program
    cls = model_class(args.model)
    data = load_data(args.data, cls) if args.data else None
    if cls is not None:
        if data is None:  # a built-in model without --data: draw its small example instance
            model, data = cls.example(seed=0)
            if args.set:
                model = cls(**{**_ctor_args(model), **parse_settings(args.set)})
            if hasattr(model, "structure") or not isinstance(model, Program):
                data = None  # a declared structure needs no data
        else:
            model = build_model(args.model, data, parse_settings(args.set))
    else:
        model = build_model(args.model, data, {})
    options = {"params": args.params}
    if args.expand:
        options["expand"] = True
    g = pg.graph(model, *(() if data is None else (data,)), **options)
    pg.render(g, args.output)
    print(f"wrote {args.output} ({g.number_of_nodes()} nodes, {g.number_of_edges()} edges)")
    return 0


def _ctor_args(model: Any) -> dict:
    return {f: getattr(model, f) for f in getattr(model, "_repr_fields", ())}


def cmd_demo(args: argparse.Namespace) -> int:
    from probgen.demo import run_demo
    run_demo(args.out, quick=args.quick)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
