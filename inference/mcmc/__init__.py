"""The `mcmc` engine: MCMC posteriors and MCMC-based learning."""
# topic-model methods first: find_method takes the first method that accepts a declaration
from probgen.inference.mcmc import lda  # noqa: F401
from probgen.inference.mcmc import nuts  # noqa: F401
