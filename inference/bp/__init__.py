"""The `bp` engine: loopy belief propagation (damped sum-product marginals, max-product MAP,
the Bethe estimate of log Z) for factor graphs and Bayesian networks whose exact
elimination is too large (`probgen.ops.message_passing`)."""
from probgen.inference.bp import bayesian_network  # noqa: F401
from probgen.inference.bp import factor_graph  # noqa: F401
