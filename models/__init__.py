"""Built-in declarations. Models state what they are; they never import engines."""
from probgen.models.factor_graph import FactorGraph  # noqa: F401
