"""Built-in declarations. Models state what they are; they never import engines."""
from probgen.models.boltzmann import RBM, DBM, DBN, BoltzmannMachine  # noqa: F401
