"""The `flow` engine: exact maximum likelihood through invertible transforms."""
from probgen.inference.flow import likelihood  # noqa: F401
