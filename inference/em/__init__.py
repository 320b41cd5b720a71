"""The `em` engine: expectation-maximisation, closed-form M-steps."""
from probgen.inference.em import hmm  # noqa: F401
