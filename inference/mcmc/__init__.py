"""The `mcmc` engine: MCMC posteriors and MCMC-based learning. Specific methods are tried
before the generic NUTS method (``Method.generic``), whatever the import order."""
from probgen.inference.mcmc import bayesian_network  # noqa: F401
from probgen.inference.mcmc import energy  # noqa: F401
from probgen.inference.mcmc import factor_graph  # noqa: F401
from probgen.inference.mcmc import lda  # noqa: F401
from probgen.inference.mcmc import nuts  # noqa: F401
from probgen.inference.mcmc import langevin  # noqa: F401
