"""Checkpoints and resume (``pg.fit(checkpoint=, checkpoint_every=)``, ``pg.resume``,
`probgen.checkpoint`).

The central test kills a fit with SIGKILL in a subprocess while it trains (after a checkpoint
has been written) and resumes it here: the resumed fit must equal the uninterrupted one with
the same seed *bit for bit*. Why exact equality and no tolerance: on CPU, with one thread,
the resumed run executes the same floating-point operations on the same values in the same
order — the checkpoint holds the parameters, optimiser / schedule / sampler state and every
random stream exactly (tensors are written bit for bit) — so any difference is a bug.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import probgen as pg
from probgen import checkpoint as checkpoints
from probgen import registry


def _examples():
    """``{id: (model, data, engine)}``: one cell for every registered method whose loop
    checkpoints (found in the registry: a new method on the trainer or the iterative driver
    is covered), from the built-in examples where they iterate and the contract test's extra
    examples (network EM with missing cells, a Bayesian mixture, a user program's EM) where
    they do not (a complete-data network EM is one closed-form step: no loop, no checkpoint)."""
    from test_contract import _extra_tol_examples
    seen, out = set(), {}
    extra = _extra_tol_examples()
    for key, (model, data, engine) in extra.items():
        method = registry.find_method(registry.as_declaration(model), engine)
        if checkpoints.can_checkpoint(method):
            seen.add(type(method))
            out[f"{key}-{method.name}"] = (model, data, engine)
    for name, cls in sorted(registry.models().items()):
        model, data = cls.example(seed=0)
        for engine in pg.compatible(model):
            method = registry.find_method(model, engine)
            if checkpoints.can_checkpoint(method) and type(method) not in seen:
                # complete rows are one closed-form step of a network EM: hide cells so that it iterates
                rows = extra["bn_missing-em"][1] if name == "bn" and engine in ("bp", "meanfield") else data
                seen.add(type(method))
                out[f"{name}-{engine}-{method.name}"] = (model, rows, engine)
    return out


EXAMPLES = _examples()
# persistent contrastive divergence: its Markov chains are trainer state that a resume must restore
# (lr 2: weights large enough that the chains' state changes the Gibbs draws — at the default
# lr the example's weights stay so small that a resume with wrong chains went unnoticed)
EXAMPLES["rbm-mcmc-pcd"] = (*registry.models()["rbm"].example(seed=0), "mcmc")
#: options of a case besides ``tol``
CASE_OPTIONS = {"rbm-mcmc-pcd": {"persistent": True, "momentum": 0.5, "batch_size": 8, "lr": 2.0}}
CASES = sorted(EXAMPLES)


@pytest.mark.parametrize("loop", ["gradient", "iterative"])
def test_every_method_on_a_checkpointing_loop_is_covered(loop):
    """Every method on the gradient trainer and on the iterative driver checkpoints, and is
    reached by the tests below (among them the GMM and HMM EM)."""
    on_loop = {type(m) for e in pg.engines() for m in registry.methods(e) if getattr(m, "loop", None) == loop}
    assert on_loop, f"no method runs on the {loop} loop"
    assert all(checkpoints.can_checkpoint(m()) for m in on_loop)
    covered = {type(_method(case)) for case in CASES}
    assert on_loop <= covered, f"{loop} methods without a checkpoint case: {on_loop - covered}"
    if loop == "iterative":
        assert {"gmm-em-mixture", "hmm-em-baum-welch"} <= set(CASES)


def _method(case):
    model, _, engine = EXAMPLES[case]
    return registry.find_method(registry.as_declaration(model), engine)


def _options(case):
    """``tol=None`` where the method takes it, so that the run is not cut short by convergence
    (a checkpoint is then always of a run in progress)."""
    model = registry.as_declaration(EXAMPLES[case][0])
    return {**({"tol": None} if "tol" in _method(case).fit_options(model) else {}), **CASE_OPTIONS.get(case, {})}


def _fit(case, steps, **kw):
    model, data, engine = EXAMPLES[case]
    return pg.fit(model, data, engine=engine, steps=steps, seed=0, progress=False, **_options(case), **kw)


def _data(case):
    return EXAMPLES[case][1]


def _equal(a, b):
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), f"{k} differs after resume"
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.history]


STEPS, EVERY = 12, 3

# the fit the subprocess runs: it sleeps in the callback, so that the parent's kill lands
# while it trains (the callback is not part of what a checkpoint records)
SCRIPT = textwrap.dedent("""
    import sys, time
    import probgen as pg
    from probgen import registry
    tests, case, path, steps, every, delay = sys.argv[1:7]
    sys.path.insert(0, tests)
    from test_checkpoint import EXAMPLES, _options
    model, data, engine = EXAMPLES[case]
    pg.fit(model, data, engine=engine, steps=int(steps), seed=0, progress=False, checkpoint=path,
           checkpoint_every=int(every), callback=lambda record: time.sleep(float(delay)), **_options(case))
    print("FINISHED")
""")


TESTS = os.path.dirname(os.path.abspath(__file__))


def _run_and_kill(tmp_path, case, steps=STEPS, every=EVERY, delay=0.3):
    """Start the fit in a subprocess, wait for its first checkpoint, SIGKILL it; returns the
    checkpoint's path and the step it holds (checked to be mid-run)."""
    path = tmp_path / "fit.ckpt"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), TESTS, case, str(path), str(steps), str(every),
                             str(delay)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the fit ended before its first checkpoint: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint within 180 s")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and b"FINISHED" not in out, "the kill did not land during the fit"
    saved = checkpoints.read(path)["loop"]
    step = _saved_step(saved, steps)
    assert 0 < step < steps, f"the checkpoint is not of a run in progress (step {step} of {steps})"
    return path, step


def _saved_step(loop, steps=None):
    """The steps a saved loop has done: the trainer's ``step``; the iterative driver's
    ``step`` of its running restart, after ``restart`` finished ones (one here: n_init=1)."""
    return int(loop["step"]) + int(loop.get("restart", 0)) * (steps or 0)


@pytest.mark.parametrize("case", CASES)
def test_killed_and_resumed_equals_uninterrupted(tmp_path, case):
    path, _ = _run_and_kill(tmp_path, case)
    data = _data(case)
    resumed = pg.resume(path, data, progress=False)
    _equal(resumed, _fit(case, STEPS))
    # the resumed run wrote its end; resuming a finished fit gives the same fit again
    assert _saved_step(checkpoints.read(path)["loop"], STEPS) == STEPS
    _equal(pg.resume(path, data, progress=False), resumed)


@pytest.mark.parametrize("case", CASES)
def test_checkpoints_are_written_every_n_steps_and_at_the_end(case, tmp_path, monkeypatch):
    """A checkpointing run writes after steps N, 2N, ... and at the end, and returns the
    uninterrupted fit itself (writing changes nothing)."""
    written = []
    save = checkpoints.Checkpoint.save
    monkeypatch.setattr(checkpoints.Checkpoint, "save",
                        lambda self, loop: (written.append(_saved_step(loop, 7)), save(self, loop))[1])
    fit = _fit(case, 7, checkpoint=tmp_path / "c.ckpt", checkpoint_every=3)
    assert written == [3, 6, 7]
    _equal(fit, _fit(case, 7))


# ---- never half-written ---------------------------------------------------------------------

FIRST = "gmm-em-mixture"  # a fast case for the tests of files and errors


def test_a_write_that_dies_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    """A write that fails mid-file (here: half the bytes, then an error) leaves the previous
    checkpoint as it was — it loads and resumes — and no temporary file behind."""
    path = tmp_path / "c.ckpt"
    _fit(FIRST, 4, checkpoint=path, checkpoint_every=2)
    before = path.read_bytes()
    real_save = torch.save

    def dying(obj, f, *a, **k):
        import io
        buf = io.BytesIO()
        real_save(obj, buf, *a, **k)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError("disk died mid-write")

    monkeypatch.setattr(torch, "save", dying)
    with pytest.raises(OSError, match="mid-write"):
        _fit(FIRST, 4, checkpoint=path, checkpoint_every=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.ckpt"]  # no temporary file left
    _equal(pg.resume(path, _data(FIRST), progress=False), _fit(FIRST, 4))


KILL_MID_WRITE = textwrap.dedent("""
    import io, os, signal, sys
    import torch
    import probgen as pg
    from probgen import registry
    tests, case, path = sys.argv[1:4]
    sys.path.insert(0, tests)
    from test_checkpoint import EXAMPLES, _options
    model, data, engine = EXAMPLES[case]
    real_save = torch.save
    def dying(obj, f, *a, **k):  # the process dies with half the new file on disk
        buf = io.BytesIO()
        real_save(obj, buf, *a, **k)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save = dying
    pg.fit(model, data, engine=engine, steps=4, seed=0, progress=False, checkpoint=path, checkpoint_every=2,
           **_options(case))
""")


def test_a_process_killed_while_writing_leaves_the_old_checkpoint(tmp_path):
    """SIGKILL in the middle of writing a checkpoint (half of it flushed to disk): the file at
    the path is still the previous, complete checkpoint."""
    path = tmp_path / "c.ckpt"
    _fit(FIRST, 4, checkpoint=path, checkpoint_every=2)
    before = path.read_bytes()
    script = tmp_path / "kill.py"
    script.write_text(KILL_MID_WRITE)
    proc = subprocess.run([sys.executable, str(script), TESTS, FIRST, str(path)], cwd=tmp_path,
                          capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert path.read_bytes() == before
    stray = [p for p in tmp_path.iterdir() if p.name.startswith(".probgen-")]
    assert stray and stray[0].stat().st_size > 0  # the half-written temporary file: never at the path
    with pytest.raises(ValueError, match="not a probgen checkpoint file"):
        checkpoints.read(stray[0])
    checkpoints.read(path)


# ---- clear errors ------------------------------------------------------------------------------

def _a_checkpoint(tmp_path):
    path = tmp_path / "c.ckpt"
    _fit(FIRST, 2, checkpoint=path, checkpoint_every=1)
    return path, _data(FIRST)


class Boom:
    def __reduce__(self):  # would run code if unpickled
        return (os.system, ("touch pwned",))


def test_foreign_and_damaged_files_are_clear_errors(tmp_path):
    path, data = _a_checkpoint(tmp_path)
    full = path.read_bytes()
    cases = {"random.ckpt": (os.urandom(300), "not a probgen checkpoint file"),
             "truncated.ckpt": (full[: len(full) // 2], "not a probgen checkpoint file"),
             "empty.ckpt": (b"", "not a probgen checkpoint file")}
    for file, (content, message) in cases.items():
        (tmp_path / file).write_bytes(content)
        with pytest.raises(ValueError, match=message):
            pg.resume(tmp_path / file, data)
    fit = _fit(FIRST, 1)
    fit.save(tmp_path / "fit.pt")
    with pytest.raises(ValueError, match="not a probgen checkpoint file.*has format 'probgen.fit/2'"):
        pg.resume(tmp_path / "fit.pt", data)
    torch.save({"format": checkpoints.FORMAT, "call": {}}, tmp_path / "partial.ckpt")
    with pytest.raises(ValueError, match="damaged probgen checkpoint file"):
        pg.resume(tmp_path / "partial.ckpt", data)
    torch.save({"format": checkpoints.FORMAT, "call": {}, "loop": {}, "rng": {}, "param_store": {}},
               tmp_path / "hollow.ckpt")
    with pytest.raises(ValueError, match="damaged probgen checkpoint file"):
        pg.resume(tmp_path / "hollow.ckpt", data)
    torch.save({"format": checkpoints.FORMAT, "x": Boom()}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="no code in it ran"):
        pg.resume(tmp_path / "evil.ckpt", data)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ValueError, match="no checkpoint at"):
        pg.resume(tmp_path / "absent.ckpt", data)


def test_resume_refuses_other_data(tmp_path):
    path, data = _a_checkpoint(tmp_path)
    other = data.clone()
    other.view(-1)[0] += 1
    with pytest.raises(ValueError, match="the data differ"):
        pg.resume(path, other)


def test_checkpoint_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every is given without checkpoint"):
        _fit(FIRST, 2, checkpoint_every=2)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
            _fit(FIRST, 2, checkpoint=tmp_path / "c", checkpoint_every=bad)
    with pytest.raises(ValueError, match="checkpoint must be a file path"):
        _fit(FIRST, 2, checkpoint=3)
    with pytest.raises(ValueError, match="is a folder"):
        _fit(FIRST, 2, checkpoint=tmp_path)
    # a method whose loop cannot save its state refuses, naming those that can
    model, data = registry.models()["aode"].example(seed=0)
    with pytest.raises(ValueError, match=r"cannot checkpoint .*methods that can: .*flow/likelihood"):
        pg.fit(model, data, checkpoint=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_a_call_that_cannot_be_recorded_is_refused_before_any_work(tmp_path):
    """A checkpoint records the call; an option it cannot write (an optimiser class defined
    here, not importable by name) is a ValueError before the fit starts."""
    class MyAdam(torch.optim.Adam):
        pass

    with pytest.raises(ValueError, match="cannot save the fit options"):
        _fit("flow-flow-likelihood", 2, checkpoint=tmp_path / "c", optim=MyAdam)
    assert not (tmp_path / "c").exists()
