"""The `em` engine: expectation-maximisation, closed-form M-steps."""
from probgen.inference.em import bayesian_network  # noqa: F401
from probgen.inference.em import categorical_mixture  # noqa: F401
from probgen.inference.em import grammar  # noqa: F401
from probgen.inference.em import hmm  # noqa: F401
from probgen.inference.em import program  # noqa: F401  (generic: tried after the specific methods)
from probgen.inference.em import mixture  # noqa: F401
