"""Probabilistic context-free grammars, one idea per module:

* `declaration` – `PCFG`, the declaration;
* `text` – the grammar text format (`Rule`, reading, writing);
* `tree` – parse trees (`Tree`, bracketed text, drawing);
* `normal_form` – the chart normal form (CNF conversion with
  unary-chain closure) the chart algorithms of `probgen.ops.inside` run on.
"""
from probgen.models.pcfg.declaration import DEFAULT_GRAMMAR, EXAMPLE_GRAMMAR, PCFG
from probgen.models.pcfg.text import Rule
from probgen.models.pcfg.tree import Tree

__all__ = ["PCFG", "Rule", "Tree", "EXAMPLE_GRAMMAR", "DEFAULT_GRAMMAR"]
