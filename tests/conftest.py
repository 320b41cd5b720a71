import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("PROBGEN_TEST", "1")


@pytest.fixture(autouse=True)
def _clear_param_store():
    import pyro
    pyro.clear_param_store()
    yield


# One torch thread: the suite is many small tensor operations, for which a thread pool only
# adds overhead (and contention on a shared 2-core machine). Benchmarks set their own threads.
import torch  # noqa: E402

torch.set_num_threads(1)
