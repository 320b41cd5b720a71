"""probgen: declare a generative model once, fit it with any engine that fits, draw it.

>>> import probgen as pg
>>> from probgen.models import GaussianMixture
>>> fit = pg.fit(GaussianMixture(3, 4), pg.load_dataset("iris"), engine="em", seed=0)
"""
from probgen import distributed
from probgen.api import compatible, engines, fit, infer, load, num_threads, resume, set_num_threads
from probgen.data import load_dataset
from probgen.declarations import Declaration, Program, UserProgram
from probgen.fit import Fit
from probgen.graph import d_separated, graph, markov_blanket, moral_graph, render
from probgen.loops.iterative import ConvergenceWarning
from probgen.selection import Selection, select

__all__ = ["fit", "resume", "infer", "engines", "compatible", "load", "Fit", "graph", "render",
           "d_separated", "markov_blanket", "moral_graph", "load_dataset",
           "Declaration", "Program", "UserProgram", "set_num_threads", "num_threads",
           "ConvergenceWarning", "distributed", "select", "Selection"]
__version__ = "0.1.0"
