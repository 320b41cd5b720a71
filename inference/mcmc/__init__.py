"""The `mcmc` engine: MCMC posteriors and MCMC-based learning."""
from probgen.inference.mcmc import nuts  # noqa: F401
