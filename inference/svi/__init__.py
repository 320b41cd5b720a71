"""The `svi` engine: stochastic VI on the ELBO. Specific methods (amortised encoder/decoder
programs) are tried before the generic program method (``Method.generic``)."""
from probgen.inference.svi import autoencoder  # noqa: F401
from probgen.inference.svi import program  # noqa: F401
