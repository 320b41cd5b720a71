"""Probabilistic context-free grammars, one idea per module:

* :mod:`~probgen.models.pcfg.declaration` – :class:`PCFG`, the declaration;
* :mod:`~probgen.models.pcfg.text` – the grammar text format (:class:`Rule`, reading, writing);
* :mod:`~probgen.models.pcfg.tree` – parse trees (:class:`Tree`, bracketed text, drawing);
* :mod:`~probgen.models.pcfg.normal_form` – the chart normal form (CNF conversion with
  unary-chain closure) the chart algorithms of :mod:`probgen.ops.inside` run on.
"""
from probgen.models.pcfg.declaration import DEFAULT_GRAMMAR, EXAMPLE_GRAMMAR, PCFG
from probgen.models.pcfg.text import Rule
from probgen.models.pcfg.tree import Tree

__all__ = ["PCFG", "Rule", "Tree", "EXAMPLE_GRAMMAR", "DEFAULT_GRAMMAR"]
