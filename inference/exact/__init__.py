"""The `exact` engine: sum-product / max-product: marginals, MAP, log-evidence."""
from probgen.inference.exact import bayesian_network  # noqa: F401
from probgen.inference.exact import classifier  # noqa: F401
from probgen.inference.exact import grammar  # noqa: F401
from probgen.inference.exact import hmm  # noqa: F401
from probgen.inference.exact import factor_graph  # noqa: F401
from probgen.inference.exact import mixture  # noqa: F401
from probgen.inference.exact import energy  # noqa: F401
