"""The `svi` engine: stochastic VI on the ELBO. Methods are tried in import order: the
specific ones (amortised encoder/decoder programs) come before the generic program method."""
from probgen.inference.svi import autoencoder  # noqa: F401
from probgen.inference.svi import program  # noqa: F401
