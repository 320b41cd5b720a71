"""Checkpoints and resume (``pg.fit(checkpoint=, checkpoint_every=)``, ``pg.resume``,
:mod:`probgen.checkpoint`).

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


def _checkpointing_cases():
    """One model x engine cell for every registered method whose loop checkpoints (found in
    the registry: a new method on the trainer or the iterative driver is covered)."""
    seen, out = set(), []
    for name, cls in sorted(registry.models().items()):
        model, _ = cls.example(seed=0)
        for engine in pg.compatible(model):
            method = registry.find_method(model, engine)
            if checkpoints.can_checkpoint(method) and type(method) not in seen:
                seen.add(type(method))
                out.append(pytest.param(name, engine, id=f"{name}-{engine}-{method.name}"))
    return out


CASES = _checkpointing_cases()


def test_every_gradient_method_checkpoints():
    """Every method on the gradient trainer is a checkpointing method, and is reached above."""
    from probgen.loops.gradient import GradientMethod
    gradient = {type(m) for e in pg.engines() for m in registry.methods(e) if isinstance(m, GradientMethod)}
    assert gradient, "no method runs on the gradient trainer"
    covered = {type(registry.find_method(registry.models()[p.values[0]].example(seed=0)[0], p.values[1]))
               for p in CASES}
    assert gradient <= covered, f"gradient methods without a checkpoint case: {gradient - covered}"


def _fit(name, engine, steps, **kw):
    model, data = registry.models()[name].example(seed=0)
    return pg.fit(model, data, engine=engine, steps=steps, seed=0, progress=False, **kw)


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
    name, engine, path, steps, every, delay = sys.argv[1:7]
    model, data = registry.models()[name].example(seed=0)
    pg.fit(model, data, engine=None if engine == "None" else engine, steps=int(steps), seed=0,
           progress=False, checkpoint=path, checkpoint_every=int(every),
           callback=lambda record: time.sleep(float(delay)))
    print("FINISHED")
""")


def _run_and_kill(tmp_path, name, engine, steps=STEPS, every=EVERY, delay=0.3):
    """Start the fit in a subprocess, wait for its first checkpoint, SIGKILL it; returns the
    checkpoint's path and the step it holds (checked to be mid-run)."""
    path = tmp_path / "fit.ckpt"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), name, str(engine), str(path), str(steps), str(every),
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
    step = _saved_step(saved)
    assert 0 < step < steps, f"the checkpoint is not of a run in progress (step {step} of {steps})"
    return path, step


def _saved_step(loop):
    return int(loop["step"])


@pytest.mark.parametrize("name,engine", CASES)
def test_killed_and_resumed_equals_uninterrupted(tmp_path, name, engine):
    path, _ = _run_and_kill(tmp_path, name, engine)
    model, data = registry.models()[name].example(seed=0)
    resumed = pg.resume(path, data, progress=False)
    _equal(resumed, _fit(name, engine, STEPS))
    # the resumed run wrote its end; resuming a finished fit gives the same fit again
    assert _saved_step(checkpoints.read(path)["loop"]) == STEPS
    _equal(pg.resume(path, data, progress=False), resumed)


@pytest.mark.parametrize("name,engine", CASES)
def test_checkpoints_are_written_every_n_steps_and_at_the_end(name, engine, tmp_path, monkeypatch):
    """A checkpointing run writes after steps N, 2N, ... and at the end, and returns the
    uninterrupted fit itself (writing changes nothing)."""
    written = []
    save = checkpoints.Checkpoint.save
    monkeypatch.setattr(checkpoints.Checkpoint, "save",
                        lambda self, loop: (written.append(_saved_step(loop)), save(self, loop))[1])
    fit = _fit(name, engine, 7, checkpoint=tmp_path / "c.ckpt", checkpoint_every=3)
    assert written == [3, 6, 7]
    _equal(fit, _fit(name, engine, 7))


# ---- never half-written ---------------------------------------------------------------------

def _first_case():
    return CASES[0].values


def test_a_write_that_dies_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    """A write that fails mid-file (here: half the bytes, then an error) leaves the previous
    checkpoint as it was — it loads and resumes — and no temporary file behind."""
    name, engine = _first_case()
    path = tmp_path / "c.ckpt"
    _fit(name, engine, 4, checkpoint=path, checkpoint_every=2)
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
        _fit(name, engine, 4, checkpoint=path, checkpoint_every=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.ckpt"]  # no temporary file left
    model, data = registry.models()[name].example(seed=0)
    _equal(pg.resume(path, data, progress=False), _fit(name, engine, 4))


KILL_MID_WRITE = textwrap.dedent("""
    import io, os, signal, sys
    import torch
    import probgen as pg
    from probgen import registry
    name, engine, path = sys.argv[1:4]
    model, data = registry.models()[name].example(seed=0)
    real_save = torch.save
    def dying(obj, f, *a, **k):  # the process dies with half the new file on disk
        buf = io.BytesIO()
        real_save(obj, buf, *a, **k)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save = dying
    pg.fit(model, data, engine=engine, steps=4, seed=0, progress=False, checkpoint=path, checkpoint_every=2)
""")


def test_a_process_killed_while_writing_leaves_the_old_checkpoint(tmp_path):
    """SIGKILL in the middle of writing a checkpoint (half of it flushed to disk): the file at
    the path is still the previous, complete checkpoint."""
    name, engine = _first_case()
    path = tmp_path / "c.ckpt"
    _fit(name, engine, 4, checkpoint=path, checkpoint_every=2)
    before = path.read_bytes()
    script = tmp_path / "kill.py"
    script.write_text(KILL_MID_WRITE)
    proc = subprocess.run([sys.executable, str(script), name, engine, str(path)], cwd=tmp_path,
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
    name, engine = _first_case()
    path = tmp_path / "c.ckpt"
    _fit(name, engine, 2, checkpoint=path, checkpoint_every=1)
    return path, registry.models()[name].example(seed=0)[1]


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
    fit = _fit(*_first_case(), 1)
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
    name, engine = _first_case()
    with pytest.raises(ValueError, match="checkpoint_every is given without checkpoint"):
        _fit(name, engine, 2, checkpoint_every=2)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
            _fit(name, engine, 2, checkpoint=tmp_path / "c", checkpoint_every=bad)
    with pytest.raises(ValueError, match="checkpoint must be a file path"):
        _fit(name, engine, 2, checkpoint=3)
    with pytest.raises(ValueError, match="is a folder"):
        _fit(name, engine, 2, checkpoint=tmp_path)
    # a method whose loop cannot save its state refuses, naming those that can
    model, data = registry.models()["aode"].example(seed=0)
    with pytest.raises(ValueError, match=r"cannot checkpoint .*methods that can: .*flow/likelihood"):
        pg.fit(model, data, checkpoint=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_a_call_that_cannot_be_recorded_is_refused_before_any_work(tmp_path):
    """A checkpoint records the call; an option it cannot write (an optimiser class defined
    here, not importable by name) is a ValueError before the fit starts."""
    name, engine = _first_case()

    class MyAdam(torch.optim.Adam):
        pass

    method = registry.find_method(registry.models()[name].example(seed=0)[0], engine)
    if "optim" not in method.fit_options(registry.models()[name].example(seed=0)[0]):
        pytest.skip("the first checkpointing method takes no optim option")
    with pytest.raises(ValueError, match="cannot save the fit options"):
        _fit(name, engine, 2, checkpoint=tmp_path / "c", optim=MyAdam)
    assert not (tmp_path / "c").exists()
