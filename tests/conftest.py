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
