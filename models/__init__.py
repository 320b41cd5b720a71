"""Built-in declarations. Models state what they are; they never import engines."""
from probgen.models.flow import Flow  # noqa: F401
from probgen.models.diffusion import Diffusion  # noqa: F401
from probgen.models.gan import GAN  # noqa: F401
from probgen.models.energy_model import EnergyModel  # noqa: F401
