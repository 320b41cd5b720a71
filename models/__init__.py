"""Built-in declarations. Models state what they are; they never import engines."""
from probgen.models.pcfg import PCFG, Tree  # noqa: F401
