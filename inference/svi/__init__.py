"""The `svi` engine: stochastic VI on the ELBO."""
from probgen.inference.svi import program  # noqa: F401
