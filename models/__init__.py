"""Built-in declarations. Models state what they are; they never import engines."""
from probgen.models.hmm import HMM  # noqa: F401
