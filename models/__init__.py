"""Built-in declarations. Models state what they are; they never import engines."""
from probgen.models.bayesian_network import BayesianNetwork  # noqa: F401
