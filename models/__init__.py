"""Built-in declarations. Models state what they are; they never import engines."""
from probgen.models.autoencoder import Autoencoder  # noqa: F401
from probgen.models.vae import VAE  # noqa: F401
