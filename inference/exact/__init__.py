"""The `exact` engine: sum-product / max-product: marginals, MAP, log-evidence."""
from probgen.inference.exact import energy  # noqa: F401
