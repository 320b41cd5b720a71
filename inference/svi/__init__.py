"""The `svi` engine: stochastic VI on the ELBO. Specific methods are tried before the
generic program method (``Method.generic``), whatever the import order."""
from probgen.inference.svi import autoencoder  # noqa: F401
from probgen.inference.svi import lda  # noqa: F401
from probgen.inference.svi import program  # noqa: F401
