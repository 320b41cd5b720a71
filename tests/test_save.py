"""Safe fit files (issue 14, item 5): ``Fit.save`` writes ``"probgen.fit/2"`` — tensors and
plain data, no pickled objects — and ``pg.load`` reads it with ``torch.load(weights_only=True)``,
so a crafted file cannot run code. Every built-in model × every engine ``pg.compatible``
lists (generated from the registry), and user programs named ``module:qualname``, load in a
fresh process with the same params, ``log_prob`` and ``sample(5, seed=0)`` bit for bit."""
import os
import pickle
import subprocess
import sys
import textwrap
import types

import pyro
import pytest
import torch
from pyro.distributions import constraints as pyro_constraints
from torch import nn
from torch.distributions import constraints

import probgen as pg
from probgen import plain, registry
from probgen.fit import FORMAT

import save_programs

TESTS = os.path.dirname(os.path.abspath(__file__))

# user programs (tests/save_programs.py): every autoguide, a guide function, config_enumerate
PROGRAM_CASES = {"normal_mean-svi": ("normal_mean", "svi", {}),
                 "normal_mean-svi-delta": ("normal_mean", "svi", {"guide": "delta"}),
                 "normal_mean-svi-mvn": ("normal_mean", "svi", {"guide": "mvn"}),
                 "normal_mean-svi-guide_function": ("normal_mean", "svi", {"guide": save_programs.normal_mean_guide}),
                 "normal_mean-mcmc": ("normal_mean", "mcmc", {}),
                 "mixture-svi": ("mixture", "svi", {}),
                 "bayesian_mixture-mcmc": ("bayesian_mixture", "mcmc", {})}


def _builtin_cases():
    cases = {}
    for name, cls in sorted(registry.models().items()):
        model, _ = cls.example(seed=0)
        for engine in pg.compatible(model):
            cases[f"{name}-{engine}"] = (name, engine, {})
    return cases


BUILTIN_CASES = _builtin_cases()

CHILD = textwrap.dedent("""
    import os, sys
    import torch
    torch.set_num_threads(1)  # as the parent test process (tests/conftest.py): same float sums
    import probgen as pg
    from probgen.plain import from_plain
    import save_programs
    folder = sys.argv[1]
    rng = torch.get_rng_state()
    out = {}
    for case in sorted(f[:-8] for f in os.listdir(folder) if f.endswith(".data.pt")):
        fit = pg.load(os.path.join(folder, case + ".fit.pt"))
        x = from_plain(torch.load(os.path.join(folder, case + ".data.pt"), weights_only=True))
        out[case] = save_programs.answers(fit, x)
        out[case]["rng_kept"] = torch.equal(torch.get_rng_state(), rng)
    torch.save(out, os.path.join(folder, "answers.pt"))
""")


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Fit every case (``steps=3``), save fit and data, load them all in one fresh process;
    returns ``(original answers, answers in the fresh process)`` by case."""
    folder = tmp_path_factory.mktemp("fits")
    original = {}
    cases = {**{c: ("builtin", *v) for c, v in BUILTIN_CASES.items()},
             **{c: ("program", *v) for c, v in PROGRAM_CASES.items()}}
    for case, (kind, name, engine, options) in cases.items():
        if kind == "builtin":
            model, x = registry.models()[name].example(seed=0)
        else:
            model, x = getattr(save_programs, name), save_programs.data()
        fit = pg.fit(model, x, engine=engine, steps=3, seed=0, progress=False, **options)
        original[case] = save_programs.answers(fit, x)
        original[case]["state_keys"] = sorted(fit.state)  # as saved: evaluation may have filled a cache
        fit.save(folder / f"{case}.fit.pt")
        torch.save(plain.to_plain(x), folder / f"{case}.data.pt")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", CHILD, str(folder)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return original, torch.load(folder / "answers.pt", weights_only=True)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("case", [*BUILTIN_CASES, *PROGRAM_CASES])
def test_fresh_process_round_trip(round_trip, case):
    original, loaded = round_trip
    want, got = original[case], loaded[case]
    assert _same(want["params"], got["params"])
    assert _same(want["log_prob"], got["log_prob"])
    assert _same(want["sample"], got["sample"])
    assert (want["history"], want["objective"], want["log_prob_kind"]) == \
        (got["history"], got["objective"], got["log_prob_kind"])
    assert got["rng_kept"], "loading changed the caller's torch random state"
    # caches are left out of the file (recomputed on use); every other state entry comes back
    assert got["state_keys"] == [k for k in want["state_keys"] if not k.endswith("_cache")]


def test_round_trip_covers_caches_and_user_programs(round_trip):
    """The fresh-process cases include a state cache that was dropped and loaded programs."""
    original, _ = round_trip
    assert any(k.endswith("_cache") for a in original.values() for k in a["state_keys"])
    assert set(PROGRAM_CASES) <= set(original)


class _Marker:
    """Unpickling this creates the file ``path``: a stand-in for code a crafted file would run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_load_refuses_a_file_that_would_run_code(tmp_path, writer):
    marker, path = tmp_path / "ran", tmp_path / "fit.pt"
    payload = {"format": FORMAT, "model": _Marker(marker)}
    with open(path, "wb") as f:
        torch.save(payload, f) if writer == "torch.save" else pickle.dump(payload, f)
    with pytest.raises(ValueError, match="not a probgen fit file"):
        pg.load(path)
    assert not marker.exists(), "pg.load ran code from the file"
    # the file is live: an unrestricted unpickler does run it (so the check above can fail)
    with open(path, "rb") as f:
        live = torch.load(f, weights_only=False) if writer == "torch.save" else pickle.load(f)
    live["model"].close()
    assert marker.exists()


def test_load_refuses_format_1(tmp_path):
    model, x = registry.models()["gmm"].example(seed=0)
    fit = pg.fit(model, x, engine="em", steps=2, seed=0, progress=False)
    old = {"format": "probgen.fit/1", "model": fit.model, "params": fit.params, "history": fit.history,
           "engine": fit.engine, "method": fit.method, "state": fit.state, "options": fit.options,
           "log_prob_kind": None}
    torch.save(old, tmp_path / "old.pt")  # format 1 pickled the declaration object
    with pytest.raises(ValueError, match="not a probgen fit file"):
        pg.load(tmp_path / "old.pt")
    torch.save({"format": "probgen.fit/1"}, tmp_path / "plain-old.pt")
    with pytest.raises(ValueError, match="probgen.fit/1"):
        pg.load(tmp_path / "plain-old.pt")


def test_file_holds_plain_data_only(tmp_path):
    fit = pg.fit(save_programs.normal_mean, save_programs.data(), engine="svi", steps=3, seed=0, progress=False)
    fit.save(tmp_path / "f.pt")
    payload = torch.load(tmp_path / "f.pt", weights_only=True)
    assert payload["format"] == "probgen.fit/2"
    assert payload["model"] == {"__probgen__": "program", "name": "save_programs:normal_mean"}
    assert payload["state"]["guide"] == {"autoguide": "normal"}

    def leaves(v):
        if isinstance(v, dict):
            assert all(type(k) is str for k in v)
            return [u for w in v.values() for u in leaves(w)]
        if isinstance(v, list):
            return [u for w in v for u in leaves(w)]
        return [v]
    assert {type(v) for v in leaves(payload)} <= {type(None), bool, int, float, str, torch.Tensor}


def test_save_refuses_programs_that_cannot_be_imported(tmp_path):
    x = save_programs.data()
    closure_scale = 1.0

    def closure(x):
        save_programs.normal_mean(x * closure_scale)
    in_main = types.FunctionType(save_programs.normal_mean.__code__, save_programs.__dict__, "in_main")
    in_main.__module__ = "__main__"
    for fn, why in ((lambda x: save_programs.normal_mean(x), "lambda"), (closure, "inside another function"),
                    (in_main, "__main__")):
        fit = pg.fit(fn, x, engine="mcmc", steps=3, seed=0, progress=False)
        with pytest.raises(ValueError, match=why):
            fit.save(tmp_path / "f.pt")
        assert not os.listdir(tmp_path), "a refused save left a file"


def test_load_names_a_program_it_cannot_import(tmp_path):
    module = tmp_path / "probgen_test_gone.py"
    module.write_text("from save_programs import normal_mean\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import probgen_test_gone
        fit = pg.fit(probgen_test_gone.normal_mean, save_programs.data(), engine="mcmc", steps=3, seed=0,
                     progress=False)
    finally:
        sys.path.remove(str(tmp_path))
    # normal_mean's own module is save_programs: the saved name is where it is defined
    fit.save(tmp_path / "ok.pt")
    assert torch.load(tmp_path / "ok.pt", weights_only=True)["model"]["name"] == "save_programs:normal_mean"
    payload = torch.load(tmp_path / "ok.pt", weights_only=True)
    payload["model"]["name"] = "probgen_test_gone:normal_mean"
    torch.save(payload, tmp_path / "gone.pt")
    del sys.modules["probgen_test_gone"]
    module.unlink()
    with pytest.raises(ValueError, match="cannot import the program 'probgen_test_gone:normal_mean'"):
        pg.load(tmp_path / "gone.pt")
    payload["model"]["name"] = "save_programs:no_such_program"
    torch.save(payload, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="no_such_program"):
        pg.load(tmp_path / "missing.pt")


def test_save_refuses_a_network_passed_in(tmp_path):
    """A declaration that builds its network saves its weights; a network the user passed in
    cannot be rebuilt from the file, so saving says so (and names the argument)."""
    model, x = registry.models()["ebm"].example(seed=0)
    own = type(model)(2, energy_net=nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)))
    fit = pg.fit(own, x, steps=1, seed=0, progress=False)
    with pytest.raises(ValueError, match="energy_net"):
        fit.save(tmp_path / "f.pt")


def test_declaration_records_its_constructor_arguments():
    GMM, GC = registry.models()["gmm"], registry.models()["bayes_classifier"]
    inner = GMM(2, dim=4, covariance="diag")
    outer = GC(inner)
    assert inner.init_arguments == ((2,), {"dim": 4, "covariance": "diag"})
    assert outer.init_arguments[0][0] is inner
    # NaiveBayes calls GenerativeClassifier.__init__ itself: the user's call is what is kept
    assert registry.models()["naive_bayes"](pseudo_count=2.0).init_arguments == ((), {"pseudo_count": 2.0})
    again = plain.from_plain(plain.to_plain(outer))
    assert type(again) is GC and type(again.class_conditional) is GMM
    assert again.class_conditional.covariance == "diag"


def test_constraints_round_trip():
    for module in (constraints, pyro_constraints):
        for name in dir(module):
            c = getattr(module, name)
            if isinstance(c, constraints.Constraint):  # a named singleton comes back as itself
                assert plain.from_plain(plain.to_plain(c)) is c, name
    for c in (constraints.interval(-1., 2.), constraints.greater_than(torch.tensor([0., 1.])),
              constraints.greater_than_eq(3.), constraints.less_than(-2.), constraints.half_open_interval(0., 5.),
              constraints.integer_interval(0, 4), constraints.independent(constraints.positive, 2),
              constraints.multinomial(7)):
        again = plain.from_plain(plain.to_plain(c))
        assert type(again) is type(c)
        for attr, value in vars(c).items():
            assert _same(plain.to_plain(getattr(again, attr)), plain.to_plain(value)), (c, attr)


def test_plain_refuses_what_it_cannot_name():
    with pytest.raises(ValueError, match=r"fit.state\['x'\]: a builtins.object"):
        plain.to_plain({"x": object()}, "fit.state")
    with pytest.raises(ValueError, match="unknown kind"):
        plain.from_plain({"__probgen__": "pickle", "data": "..."})
    with pytest.raises(ValueError, match="not a probgen declaration class"):
        plain.from_plain({"__probgen__": "declaration", "class": "subprocess:Popen", "args": [["true"]],
                          "kwargs": {}})
    with pytest.raises(ValueError, match="not a probgen dataclass"):
        plain.from_plain({"__probgen__": "dataclass", "class": "subprocess:CompletedProcess",
                          "fields": {"args": "true", "returncode": 0}})
    with pytest.raises(ValueError, match="outside torch, Pyro and probgen"):
        plain.from_plain({"__probgen__": "constraint", "name": "os:system"})
    # a user dict that uses the tag as a key still round-trips
    tricky = {"__probgen__": "tuple", (1, 2): [3]}
    assert plain.from_plain(plain.to_plain(tricky)) == tricky


def test_load_leaves_the_callers_param_store_alone(tmp_path):
    fit = pg.fit(save_programs.normal_mean, save_programs.data(), engine="svi", steps=3, seed=0, progress=False)
    fit.save(tmp_path / "f.pt")
    pyro.param("mine", torch.tensor(1.5))
    again = pg.load(tmp_path / "f.pt")
    again.log_prob(save_programs.data())
    assert list(pyro.get_param_store()) == ["mine"] and pyro.param("mine").item() == 1.5


def test_declaration_networks_come_back_by_state_dict():
    """A declaration's own networks are written as their ``state_dict`` and loaded (strictly)
    into the rebuilt declaration: trained weights survive even where ``fit.params`` would not
    carry them."""
    for name in ("flow", "gan", "diffusion", "ebm"):
        model, _ = registry.models()[name].example(seed=0)
        with torch.no_grad():
            for p in model.net.parameters():
                p.add_(1.0)  # as training would: the weights differ from the seeded initial ones
        again = plain.from_plain(plain.to_plain(model))
        want, got = model.net.state_dict(), again.net.state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), name


def test_load_refuses_a_damaged_file(tmp_path):
    torch.save({"format": FORMAT, "model": {"__probgen__": "tuple"}}, tmp_path / "f.pt")
    with pytest.raises(ValueError, match="damaged probgen fit file"):
        pg.load(tmp_path / "f.pt")


def test_cli_program_file_is_named_and_read_once_per_load(tmp_path):
    """A program the CLI read from ``path/to/file.py:name`` is saved as that path; fitting
    does not run the file again (the fit's copy shares the function), loading does."""
    from probgen.declarations import load_program
    runs = tmp_path / "runs.txt"
    source = tmp_path / "prog.py"
    source.write_text(f"open({str(runs)!r}, 'a').write('ran\\n')\nfrom save_programs import normal_mean\n")
    program = load_program(f"{source}:normal_mean")
    fit = pg.fit(program, save_programs.data(), engine="mcmc", steps=3, seed=0, progress=False)
    assert runs.read_text().count("ran") == 1
    fit.save(tmp_path / "f.pt")
    assert torch.load(tmp_path / "f.pt", weights_only=True)["model"] == {"__probgen__": "program",
                                                                          "file": f"{source}:normal_mean"}
    again = pg.load(tmp_path / "f.pt")
    assert runs.read_text().count("ran") == 2
    assert torch.equal(again.log_prob(save_programs.data()), fit.log_prob(save_programs.data()))
