"""The `mcmc` engine: MCMC posteriors and MCMC-based learning."""
# Gibbs for Bayesian networks is registered before the generic NUTS method: find_method
# takes the first method that accepts a model, and a network is also a Pyro program.
from probgen.inference.mcmc import bayesian_network  # noqa: F401
from probgen.inference.mcmc import nuts  # noqa: F401
