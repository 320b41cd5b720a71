"""The `mcmc` engine: MCMC posteriors and MCMC-based learning."""
from probgen.inference.mcmc import nuts  # noqa: F401
from probgen.inference.mcmc import langevin  # noqa: F401
