"""The `em` engine: expectation-maximisation, closed-form M-steps."""
from probgen.inference.em import hmm  # noqa: F401
from probgen.inference.em import program  # noqa: F401  (generic: keep LAST, specific methods first)
