"""The `exact` engine: sum-product / max-product: marginals, MAP, log-evidence."""
