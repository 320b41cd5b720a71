import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("PROBGEN_TEST", "1")

# One thread for torch and for NumPy's BLAS (peers: hmmlearn, scikit-learn): the suite is
# many small tensor operations, for which a thread pool only adds overhead and contention
# on a 2-core machine. Benchmarks set their own threads.
torch.set_num_threads(1)
try:
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    pass


@pytest.fixture(autouse=True)
def _clear_param_store():
    import pyro
    pyro.clear_param_store()
    yield
