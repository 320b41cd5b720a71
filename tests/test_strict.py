"""Strict everywhere (issue 14): generated over the registry, so a new model or engine is
covered without editing this file. Unknown options to ``pg.fit`` and ``pg.infer`` are refused
by the core before any work, in ``check_options``' one format; ``init`` is checked once in the
core against the declaration's parameter names and shapes, and refused by methods that do
not start from parameters."""
import pytest
import torch

import probgen as pg
from probgen import registry
from test_contract import _cases


def _cells():
    return _cases()  # every built-in model × every engine pg.compatible lists


def _example(name):
    return registry.models()[name].example(seed=0)


@pytest.mark.parametrize("name,engine", _cells())
def test_fit_refuses_unknown_options(name, engine):
    model, data = _example(name)
    with pytest.raises(ValueError, match=rf"unknown {engine} options \['bogus'\]; known: "):
        pg.fit(model, data, engine=engine, steps=1, progress=False, bogus=1)


@pytest.mark.parametrize("name,engine", _cells())
def test_init_is_checked_in_the_core(name, engine):
    model, data = _example(name)
    method = registry.find_method(model, engine)
    if not method.accepts_init:
        with pytest.raises(ValueError, match="cannot use init"):
            pg.fit(model, data, engine=engine, steps=1, progress=False, init={"anything": torch.zeros(1)})
        return
    shapes = pg.api._param_shapes(model, model.check_data(data))
    if shapes is None:
        pytest.skip(f"{type(model).__name__} states no parameter shapes; its method checks init names")
    with pytest.raises(ValueError, match=r"init names \['bogus'\], which are not parameters"):
        pg.fit(model, data, engine=engine, steps=1, progress=False, init={"bogus": torch.zeros(1)})
    first = sorted(shapes)[0]
    wrong = torch.zeros(tuple(shapes[first]) + (2,))
    with pytest.raises(ValueError, match=rf"init\['{first}'\] has shape"):
        pg.fit(model, data, engine=engine, steps=1, progress=False, init={first: wrong})


def _query_cells():
    out = []
    for name, engine in ((p.values[0], p.values[1]) for p in _cells()):
        model, _ = _example(name)
        for query_engine in pg.compatible(model):
            method = registry.find_method(model, query_engine)
            if method.queries:
                out.append(pytest.param(name, engine, query_engine, method.queries[0],
                                        id=f"{name}-{engine}-{query_engine}-{method.queries[0]}"))
    return out


@pytest.mark.parametrize("name,engine,query_engine,query", _query_cells())
def test_infer_refuses_unknown_options(name, engine, query_engine, query):
    model, data = _example(name)
    fit = pg.fit(model, data, engine=engine, steps=1, seed=0, progress=False)
    with pytest.raises(ValueError, match=rf"unknown '{query}' query options \['bogus'\]"):
        pg.infer(fit, data, query=query, engine=query_engine, bogus=1)
