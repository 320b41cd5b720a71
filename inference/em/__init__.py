"""The `em` engine: expectation-maximisation, closed-form M-steps."""
