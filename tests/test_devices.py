"""Devices (``pg.fit(device=...)``, ``fit.to(device)``, `probgen.devices`): ``"cpu"``
equals the default bit for bit for every model x engine, absent devices are clear errors, and
— where a GPU is there — one fit per engine on it (skipped, saying so, on a machine without)."""
import pytest
import torch

import probgen as pg
from probgen import devices, registry
from test_contract import _cases

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine: the CUDA path is not run")


def _same(a, b):
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        assert a.params[k].dtype == b.params[k].dtype and torch.equal(a.params[k], b.params[k]), k
    # wall-clock times aside, the histories are equal too
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.history]


@pytest.mark.parametrize("name,engine", _cases())
def test_cpu_equals_the_default(name, engine):
    """``device="cpu"`` and ``torch.device("cpu")`` give the default's fit bit for bit: on CPU
    data nothing is moved or copied and the method runs as without the option."""
    model, data = registry.models()[name].example(seed=0)
    default = pg.fit(model, data, engine=engine, steps=3, seed=0, progress=False)
    for device in ("cpu", torch.device("cpu")):
        _same(default, pg.fit(model, data, engine=engine, steps=3, seed=0, progress=False, device=device))


def _absent():
    out = [("tpu", "unknown device 'tpu'"), ("meta", "probgen runs on cpu, cuda and mps"),
           ("cuda:99" if CUDA else "cuda", "CUDA"), ("cuda:1" if not CUDA else "cuda:99", "CUDA")]
    if "mps" not in devices.available():
        out.append(("mps", "MPS is not available"))
    return out


@pytest.mark.parametrize("device,message", _absent())
def test_an_absent_device_is_a_clear_error(device, message):
    model, data = registry.models()["gmm"].example(seed=0)
    with pytest.raises(ValueError, match=message) as err:
        pg.fit(model, data, steps=1, progress=False, device=device)
    assert "devices here: ['cpu'" in str(err.value)  # it names what there is
    fit = pg.fit(model, data, steps=1, progress=False)
    with pytest.raises(ValueError, match=message):
        fit.to(device)


@pytest.mark.parametrize("device", [3, 1.0, ["cuda"], object()])
def test_a_device_of_another_type_is_a_clear_error(device):
    model, data = registry.models()["gmm"].example(seed=0)
    with pytest.raises(ValueError, match="device must be a name"):
        pg.fit(model, data, steps=1, progress=False, device=device)


def test_a_method_refuses_a_device_its_kernels_do_not_run_on():
    """The core checks ``Method.devices`` (the device need not be there for the check): a
    CPU-only method names why and the methods that run on the device."""
    hmm = registry.find_method(registry.models()["hmm"].example(seed=0)[0], "em")
    assert "cuda" not in hmm.devices
    with pytest.raises(ValueError, match=r"runs on cpu only.*, not cuda; methods that run on cuda: "):
        devices.check_method(hmm, torch.device("cuda"))
    devices.check_method(hmm, torch.device("cpu"))  # no error
    devices.check_method(hmm, None)


@pytest.mark.parametrize("name,engine", [("gmm", "em"), ("vae", "svi"), ("gmm", "svi"), ("flow", "flow"),
                                         ("lda", "meanfield"), ("hmm", "mcmc")])
def test_fit_to_cpu_is_an_equal_copy(name, engine):
    """``fit.to("cpu")`` is a new fit with the same parameters, declaration weights and answers;
    the fit it was made from is not changed (its params are not the copy's objects)."""
    model, data = registry.models()[name].example(seed=0)
    fit = pg.fit(model, data, engine=engine, steps=3, seed=0, progress=False)
    moved = fit.to("cpu")
    assert moved is not fit and moved.model is not fit.model and moved.params is not fit.params
    for k, v in fit.params.items():
        assert torch.equal(moved.params[k], v) and moved.params[k].device.type == "cpu"
    for (k, a), (_, b) in zip(fit.model.__dict__.items(), moved.model.__dict__.items()):
        if isinstance(a, torch.nn.Module):
            for (pk, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
                assert torch.equal(pa, pb), (k, pk)
    assert torch.equal(moved.log_prob(data, seed=0), fit.log_prob(data, seed=0))
    assert moved.history == fit.history and moved.engine == fit.engine


def test_to_device_moves_nested_data_and_leaves_cpu_data_alone():
    x = torch.arange(6.0).reshape(3, 2)
    nested = {"a": [x, (x, 3)], "b": "text"}
    out = devices.to_device(nested, torch.device("cpu"))
    assert out["a"][0] is x and out["a"][1][0] is x and out["a"][1][1] == 3 and out["b"] == "text"
    from probgen.ops.chain import Sequences
    s = Sequences(torch.zeros(2, 3, dtype=torch.long), torch.tensor([3, 2]))
    assert devices.to_device(s, torch.device("cpu")) is s


# ---- on a GPU (run where torch.cuda.is_available(); skipped with a message elsewhere) ----------

def _cuda_cases():
    """One model per engine whose method says it runs on CUDA."""
    seen, out = set(), []
    for name, cls in sorted(registry.models().items()):
        model, _ = cls.example(seed=0)
        for engine in pg.compatible(model):
            method = registry.find_method(model, engine)
            if "cuda" in method.devices and engine not in seen:
                seen.add(engine)
                out.append(pytest.param(name, engine, id=f"{name}-{engine}"))
    return out


@needs_cuda
@pytest.mark.parametrize("name,engine", _cuda_cases())
def test_a_fit_on_cuda(name, engine):
    """The fit runs on the GPU (its params are there) and agrees with the CPU fit to float
    round-off of a few steps: GPU kernels sum in another order (and draw from another random
    stream where the method samples, so only finiteness is checked for those)."""
    model, data = registry.models()[name].example(seed=0)
    gpu = pg.fit(model, data, engine=engine, steps=3, seed=0, progress=False, device="cuda")
    assert all(v.device.type == "cuda" for v in gpu.params.values())
    assert all(torch.isfinite(v).all() for v in gpu.params.values() if v.is_floating_point())
    back = gpu.to("cpu")
    assert all(v.device.type == "cpu" for v in back.params.values())
    assert torch.isfinite(torch.as_tensor(back.log_prob(data, seed=0))).all()


@needs_cuda
def test_fit_to_cuda_and_back():
    model, data = registry.models()["gmm"].example(seed=0)
    fit = pg.fit(model, data, steps=3, seed=0, progress=False)
    there = fit.to("cuda")
    assert all(v.device.type == "cuda" for v in there.params.values())
    for k, v in there.to("cpu").params.items():
        assert torch.equal(v, fit.params[k])


def test_the_readme_table_matches_the_registry():
    """The docs' devices / checkpoints table (docs/fits.md) is `probgen.devices.table`."""
    from test_docs import _assert_generated_table
    _assert_generated_table("devices", "devices and checkpoints table", devices.table())
