"""The `meanfield` engine: fully factorised VI: CAVI / fixed-point updates."""
from probgen.inference.meanfield import energy  # noqa: F401
