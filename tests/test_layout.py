"""The layout holds: every method's ``accepts`` asks a capability of ``probgen.protocols``
(inspected in its source), declarations (``models/``) never import engines
(``inference/``), and the protocols are structural (a class of one's own that offers the
hooks is accepted)."""
import ast
import inspect
import pathlib
import typing

import torch

from probgen import protocols, registry

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _all_methods():
    return [m for e in registry.engines() for m in registry.methods(e)]


def test_every_accepts_uses_the_protocols():
    assert len(_all_methods()) > 20
    for m in _all_methods():
        src = inspect.getsource(type(m).accepts)
        assert "protocols." in src, f"{type(m).__name__}.accepts does not check a probgen.protocols protocol:\n{src}"
        assert "hasattr(" not in src, f"{type(m).__name__}.accepts still checks attributes ad hoc:\n{src}"


def test_every_protocol_is_runtime_checkable_and_used():
    sources = "\n".join(inspect.getsource(type(m).accepts) for m in _all_methods())
    sources += inspect.getsource(protocols.is_hidden_markov_chain)
    names = [n for n in protocols.__all__ if isinstance(getattr(protocols, n), type)]
    assert names
    for n in names:
        proto = getattr(protocols, n)
        assert getattr(proto, "_is_protocol", False) and getattr(proto, "_is_runtime_protocol", False), n
        assert f"protocols.{n}" in sources or f"implements(model, {n})" in sources, f"protocol {n} is not used"


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            # models/ installs as probgen.models: a relative import of level >= 2 leaves it
            yield ("." * node.level) + (node.module or "")


def test_models_never_import_inference():
    files = sorted((ROOT / "models").rglob("*.py"))
    assert len(files) > 15
    for f in files:
        for name in _imports(f):
            assert "inference" not in name.split("."), f"{f.relative_to(ROOT)} imports {name}"
            if name.startswith(".."):
                depth = len(f.relative_to(ROOT / "models").parts)  # 1 for models/x.py
                assert len(name) - len(name.lstrip(".")) <= depth, f"{f.relative_to(ROOT)}: {name} leaves models/"


class _Coins:
    """Not a built-in class: two biased coins, with the three EM hooks only."""

    bayesian = False

    def init_params(self, data, seed=None):
        return {"p": torch.tensor([0.3, 0.6], dtype=torch.float64)}

    def e_step(self, params, x):
        return None, torch.zeros(())

    def m_step(self, stats, *args):
        return {"p": torch.tensor([0.3, 0.6], dtype=torch.float64)}


def test_protocols_are_structural():
    coins = _Coins()
    assert protocols.implements(coins, protocols.EMHooks)
    assert any(m.accepts(coins) for m in registry.methods("em"))
    # a member that is present but not callable does not offer the method
    coins.e_step = None
    assert isinstance(coins, protocols.EMHooks) and not protocols.implements(coins, protocols.EMHooks)
    assert not any(m.accepts(coins) for m in registry.methods("em"))
    assert typing.Protocol in protocols.EMHooks.__mro__


def test_protocol_members_provided_by_getattr_count():
    """A member an object provides through ``__getattr__`` (a ``torch.nn.Module``'s submodules)
    offers it: ``isinstance`` against the protocol misses it from Python 3.12 on (static lookup),
    which refused every GAN there (seen on the device machine's Python 3.12)."""
    from torch import nn

    from probgen.models import GAN
    nets = nn.Module()
    nets.generator, nets.discriminator = nn.Linear(2, 2), nn.Linear(2, 1)
    assert "generator" not in vars(nets) and protocols.implements(nets, protocols.AdversarialNetworks)
    del nets.discriminator
    assert not protocols.implements(nets, protocols.AdversarialNetworks)
    assert registry.find_method(GAN(2), "adversarial").accepts(GAN(2))


def test_readme_where_things_live_names_only_what_exists():
    """The docs' 'Where things live' listing (docs/concepts.md, moved from the README)."""
    import re
    readme = (ROOT / "docs" / "concepts.md").read_text()
    block = re.search(r"### Where things live\n.*?```\n(.*?)```", readme, re.S)
    assert block, "docs/concepts.md has a 'Where things live' listing"
    names = set(re.findall(r"(?<![\w.])([A-Za-z_]\w*(?:\.py|/))(?=\s|$)", block.group(1)))
    assert len(names) > 40
    here = {p.name + ("/" if p.is_dir() else "") for top in ("probgen", "models", "inference")
            for p in (ROOT / top).rglob("*") if "__pycache__" not in p.parts} | {"probgen/", "models/", "inference/"}
    assert not names - here, f"the docs' listing names what does not exist: {sorted(names - here)}"
    # and every package folder is in it
    folders = {p.name + "/" for top in ("probgen", "models", "inference") for p in (ROOT / top).rglob("__init__.py")
               for p in [p.parent] if p != ROOT / top}
    assert not folders - names, f"package folders missing from the docs' listing: {sorted(folders - names)}"
