"""Built-in declarations. Models state what they are; they never import engines."""
from probgen.models.lda import LDA  # noqa: F401
from probgen.models.mixture import GaussianMixture  # noqa: F401
