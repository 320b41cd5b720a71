"""The `meanfield` engine: fully factorised VI: CAVI / fixed-point updates."""
from probgen.inference.meanfield import lda  # noqa: F401
from probgen.inference.meanfield import mixture  # noqa: F401
from probgen.inference.meanfield import hmm  # noqa: F401
from probgen.inference.meanfield import energy  # noqa: F401
from probgen.inference.meanfield import bayesian_network  # noqa: F401
from probgen.inference.meanfield import factor_graph  # noqa: F401
