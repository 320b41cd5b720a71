"""Every public function and class has a Google-style docstring with an ``Examples`` section that runs.

Public means what the package exports, written down here (``PUBLIC``): the names of
``import probgen as pg`` (``probgen.__all__``), every declaration class ``probgen.models``
exports, the ``__all__`` of ``probgen.diagnostics``, ``probgen.distributed`` and
``probgen.drawing``, and the user-facing functions of ``probgen.graph``,
``probgen.checkpoint`` and ``probgen.devices`` (the ones the README documents; the
modules' other functions are the core's plumbing). A name added to one of those exports
without a docstring example fails ``test_has_example``; every example runs as a doctest in
``test_doctest`` (tiny data, a few steps, ``seed=``: the whole file takes well under a
minute), and so do the examples in those modules' own docstrings. The public methods of
the public classes have docstrings (``test_methods_have_docstrings``). Where griffe (the
parser mkdocstrings uses; the ``docs`` extra) is installed, ``test_griffe_parses`` checks
that it reads every one of these docstrings as Google style without a warning, finds the
``Examples`` section, and reads each ``Returns`` as one unnamed value.
"""
from __future__ import annotations

import doctest
import importlib
import inspect
import logging
import sys

import pytest

import probgen as pg
import probgen.models
import probgen.threads

_EXPLICIT = {
    # user-facing functions of modules without an __all__ (the rest is the core's plumbing)
    "probgen.graph": ["graph", "program_graph", "plate_diagram", "moral_graph", "markov_blanket",
                      "d_separated", "render"],
    "probgen.checkpoint": ["active", "checkpointing_methods", "can_checkpoint", "read", "fingerprint"],
    "probgen.devices": ["available", "check_device", "to_device", "fit_to", "table"],
}


def _public() -> dict[str, object]:
    """``{qualified name: object}`` of every public function and class."""
    out: dict[str, object] = {}
    for name in pg.__all__:
        obj = getattr(pg, name)
        if not inspect.ismodule(obj):  # pg.distributed: its own __all__, below
            out[f"probgen.{name}"] = obj
    for name, obj in vars(probgen.models).items():
        if not name.startswith("_") and inspect.isclass(obj):
            out[f"probgen.models.{name}"] = obj
    modules = {m: importlib.import_module(m).__all__
               for m in ("probgen.diagnostics", "probgen.distributed", "probgen.drawing")}
    for module, names in {**modules, **_EXPLICIT}.items():
        mod = sys.modules[module] if module in sys.modules else importlib.import_module(module)
        for name in names:
            obj = getattr(mod, name)
            if callable(obj):  # drawing's FORMATS / STYLES are constants
                out[f"{module}.{name}"] = obj
    # the same object exported twice (pg.graph is probgen.graph.graph) is one name: the first
    seen, unique = set(), {}
    for name, obj in out.items():
        if id(obj) not in seen:
            seen.add(id(obj))
            unique[name] = obj
    return unique


PUBLIC = _public()


def _public_methods(cls: type) -> dict[str, object]:
    """The public methods and properties a class defines itself (not inherited ones)."""
    out = {}
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if inspect.isfunction(member) or isinstance(member, property):
            out[name] = member
    return out


def test_the_public_list_is_what_the_package_exports():
    # the list is not empty by accident, and it holds the names the brief names
    for name in ("probgen.fit", "probgen.infer", "probgen.resume", "probgen.load", "probgen.select",
                 "probgen.engines", "probgen.compatible", "probgen.Fit", "probgen.Selection",
                 "probgen.distributed.Shard", "probgen.models.GaussianMixture", "probgen.models.HMM",
                 "probgen.diagnostics.rhat", "probgen.checkpoint.active", "probgen.devices.available",
                 "probgen.drawing.to_dot", "probgen.graph"):
        assert name in PUBLIC, name
    assert len(PUBLIC) > 60


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_has_example(name):
    doc = inspect.getdoc(PUBLIC[name]) or ""
    assert doc.strip(), f"{name} has no docstring"
    # "Examples:" (plural): the heading griffe's Google-style parser reads as an examples section
    assert "\nExamples:\n" in doc, f"{name}'s docstring has no Examples: section"
    assert ">>> " in doc.split("\nExamples:\n", 1)[1], f"{name}'s Examples section has no >>> doctest"


@pytest.mark.parametrize("name", sorted(n for n, o in PUBLIC.items() if inspect.isclass(o)))
def test_methods_have_docstrings(name):
    cls = PUBLIC[name]
    # getdoc of the attribute inherits a base class's docstring (an override of a documented method)
    missing = [m for m in _public_methods(cls) if not (inspect.getdoc(getattr(cls, m)) or "").strip()]
    assert not missing, f"{name}: public methods without a docstring: {missing}"


_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_doctest(name, tmp_path, monkeypatch):
    obj = PUBLIC[name]
    monkeypatch.chdir(tmp_path)  # examples that write a file write it here
    monkeypatch.setattr(probgen.threads, "_setting", probgen.threads._setting)  # pg.set_num_threads's
    # recurse: a class's examples include its methods'; each example imports what it uses
    tests = [t for t in doctest.DocTestFinder(recurse=True).find(obj, name, globs={})
             if t.examples and t.name.startswith(name)]
    assert tests, f"{name} has no doctest"
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    failures: list[str] = []
    for t in tests:
        runner.run(t, out=failures.append)
    assert runner.failures == 0, "".join(failures)


_MODULES = ["probgen", "probgen.models", "probgen.diagnostics", "probgen.distributed", "probgen.drawing",
            "probgen.graph", "probgen.checkpoint", "probgen.devices"]


@pytest.mark.parametrize("module", _MODULES)
def test_module_docstring_examples_run(module, tmp_path, monkeypatch):
    # the modules' own docstrings (the package's first example, say) run too, where they have one
    monkeypatch.chdir(tmp_path)
    importlib.import_module(module)
    mod = sys.modules[module]  # probgen.graph the module, not the function pg.graph
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(mod, module, globs={}) if t.examples]
    if module == "probgen":
        assert tests, "the package docstring's example is found"
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    failures: list[str] = []
    for t in tests:
        runner.run(t, out=failures.append)
    assert runner.failures == 0, "".join(failures)


def test_griffe_parses():
    griffe = pytest.importorskip("griffe", reason="griffe (mkdocstrings' parser) is not installed")
    warnings: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    handler = Catch(level=logging.WARNING)
    logger = logging.getLogger("griffe")
    logger.addHandler(handler)
    try:
        for name, obj in PUBLIC.items():
            objs = [obj] + (list(_public_methods(obj).values()) if inspect.isclass(obj) else [])
            for o in objs:
                f = o.fget if isinstance(o, property) else o
                doc = inspect.getdoc(f)
                if not doc:
                    continue
                parent = None
                try:
                    sig = inspect.signature(f)
                    params = griffe.Parameters(*[
                        griffe.Parameter(p.name, kind=griffe.ParameterKind(p.kind.description),
                                         annotation=None if p.annotation is p.empty else str(p.annotation))
                        for p in sig.parameters.values()])
                    parent = griffe.Function(f.__name__, parameters=params,
                                             returns=None if sig.return_annotation is sig.empty
                                             else str(sig.return_annotation))
                except (TypeError, ValueError):
                    parent = None
                before = len(warnings)
                sections = griffe.parse_google(griffe.Docstring(doc, parent=parent))
                if o is obj and "examples" not in [sec.kind.value for sec in sections]:
                    warnings.append("griffe finds no examples section")
                for section in sections:
                    # one returned value each: a Returns item's continuation lines are indented
                    # (unindented ones would render as further returned values)
                    if section.kind.value in ("returns", "yields") and len(section.value) > 1:
                        warnings.append(f"{len(section.value)} items in its {section.kind.value} section "
                                        "(indent the continuation lines)")
                    if section.kind.value in ("returns", "yields") and any(r.name for r in section.value):
                        # "A `Fit`: ..." reads as a value named "A": start otherwise
                        warnings.append(f"a named returned value {[r.name for r in section.value]}")
                warnings[before:] = [f"{name}.{getattr(f, '__name__', '')}: {w}" for w in warnings[before:]]
    finally:
        logger.removeHandler(handler)
    assert not warnings, "\n".join(warnings)


_SPHINX_ROLE = __import__("re").compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|ref):`")


def test_no_sphinx_roles_in_docstrings():
    """mkdocstrings renders Markdown: a Sphinx role (``:func:``, ``:class:``, ``:meth:``, ...
    before a backticked name) would show literally on the API pages. The rule: a name in a
    docstring is a Markdown code span, the name between single backticks."""
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    bad = []
    for folder in ("probgen", "models", "inference"):
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in [tree] + [n for n in ast.walk(tree)
                                  if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]:
                doc = ast.get_docstring(node, clean=False) or ""
                if _SPHINX_ROLE.search(doc):
                    bad.append(f"{path.relative_to(root)}:{getattr(node, 'lineno', 1)}")
    assert not bad, f"Sphinx roles in docstrings (write `name` instead): {bad}"
