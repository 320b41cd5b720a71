"""The `svi` engine: stochastic VI on the ELBO."""
# topic-model methods first: find_method takes the first method that accepts a declaration
from probgen.inference.svi import lda  # noqa: F401
from probgen.inference.svi import program  # noqa: F401
