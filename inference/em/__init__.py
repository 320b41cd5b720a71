"""The `em` engine: expectation-maximisation, closed-form M-steps."""
from probgen.inference.em import mixture  # noqa: F401
