"""The command line, through subprocesses (as a user runs it) for the main paths, and
in-process for the matrix of bad arguments (same code path: ``probgen.cli.main``)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import probgen as pg
from probgen.cli import main

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def probgen(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "probgen.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=300)


def test_list_fit_sample_graph(tmp_path):
    out = probgen("list")
    assert out.returncode == 0 and "`GaussianMixture` (gmm)" in out.stdout
    assert "| em | `mixture` | EM iterations (`online=True`: passes over the data) | `log_likelihood` | yes |" in out.stdout  # steps unit per method
    fit_dir = tmp_path / "fit"
    out = probgen("fit", "gmm", "--engine", "em", "--steps", "30", "--seed", "1", "--out", str(fit_dir))
    assert out.returncode == 0, out.stderr
    assert (fit_dir / "fit.pt").exists() and (fit_dir / "history.png").stat().st_size > 1000
    out = probgen("sample", str(fit_dir), "-n", "25", "-o", str(tmp_path / "s.npy"))
    assert out.returncode == 0, out.stderr
    assert np.load(tmp_path / "s.npy").shape == (25, 4)  # iris has 4 features
    assert probgen("sample", str(fit_dir), "-n", "7", "-o", str(tmp_path / "s.csv")).returncode == 0
    assert np.loadtxt(tmp_path / "s.csv", delimiter=",").shape == (7, 4)
    assert probgen("sample", str(fit_dir), "-n", "100", "-o", str(tmp_path / "s.png")).returncode == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    out = probgen("graph", "gmm", "-o", str(tmp_path / "g.dot"))
    assert out.returncode == 0, out.stderr
    dot = (tmp_path / "g.dot").read_text()
    assert "z" in dot and "x" in dot


def test_fit_own_data_file_and_bad_args_exit_2(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (40, 2)), rng.normal(3, 1, (60, 2))])
    np.savetxt(tmp_path / "d.csv", x, delimiter=",", header="a,b", comments="")
    out = probgen("fit", "GaussianMixture", "--data", str(tmp_path / "d.csv"), "--set", "k=2",
                  "covariance='diag'", "--out", str(tmp_path / "f"))
    assert out.returncode == 0, out.stderr
    out = probgen("fit", "gmm", "--engine", "nope", "--out", str(tmp_path / "g"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown engine 'nope'" in lines[0] and "em" in lines[0]


def test_demo_quick(tmp_path):
    out = probgen("demo", "--quick", "--out", "demo", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for engine in ("em", "svi", "mcmc"):
        assert f"| {engine} " in out.stdout
    files = set(os.listdir(tmp_path / "demo"))
    assert {"history.png", "clusters.png", "samples.png", "em.pt"} <= files
    assert "gmm.svg" in files or "gmm.dot" in files


@pytest.mark.parametrize("argv,match", [
    (["fit", "nomodel"], "unknown model"),
    (["fit", "gmm", "--engine", "adversarial"], "does not fit|unknown engine"),
    (["fit", "gmm", "--data", "missing.csv"], "no such data file"),
    (["fit", "gmm", "--data", "iris", "--set", "k=0"], "positive integer"),
    (["fit", "gmm", "--data", "iris", "--set", "covariance=tied"], "covariance"),
    (["fit", "gmm", "--steps", "-1"], "steps"),
    (["fit", "gmm", "--set", "nonsense"], "KEY=VALUE"),
    (["fit", "gmm", "--set", "colour=3"], "bad --set"),
    (["sample", "no/such/dir", "-o", "x.npy"], "no saved fit"),
    (["graph", "gmm"], "required"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_one_line_exit_2(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("probgen: error:")
    assert __import__("re").search(match, err[0]), err[0]


def test_sample_bad_n_and_suffix(tmp_path, capsys):
    assert main(["fit", "gmm", "--steps", "3", "--out", str(tmp_path / "f")]) == 0
    fit_err = capsys.readouterr().err.strip().splitlines()  # 3 steps: the budget ends before tol
    assert fit_err and all(e.startswith("probgen: warning:") for e in fit_err)
    assert main(["sample", str(tmp_path / "f"), "-n", "0", "-o", str(tmp_path / "s.npy")]) == 2
    assert main(["sample", str(tmp_path / "f"), "-n", "3", "-o", str(tmp_path / "s.xyz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("probgen: error:") for e in err)


def test_ragged_samples_go_to_txt_and_not_to_npy(tmp_path):
    import pytest
    import torch

    from probgen.data import write_file
    docs = [torch.tensor([3, 1, 4]), torch.tensor([1, 5])]
    write_file(str(tmp_path / "docs.txt"), docs)
    assert (tmp_path / "docs.txt").read_text() == "3 1 4\n1 5\n"
    with pytest.raises(ValueError, match="different lengths"):
        write_file(str(tmp_path / "docs.npy"), docs)


def test_sample_pictures_fit_the_data_and_engine_options(tmp_path):
    """`probgen sample -o x.png` for ragged (LDA documents, PCFG trees), discrete (network
    rows) samples writes a picture; `--option` reaches the engine, an unknown one is refused
    in one line; `--out` naming a file or an unwritable folder is refused in one line."""
    for model in ("lda", "pcfg", "bn"):
        d = tmp_path / model
        out = probgen("fit", model, "--steps", "2", "--out", str(d))
        assert out.returncode == 0, out.stderr
        out = probgen("sample", str(d), "-n", "5", "-o", str(tmp_path / f"{model}.png"))
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert (tmp_path / f"{model}.png").read_bytes()[:4] == b"\x89PNG"
    out = probgen("fit", "gmm", "--steps", "3", "--out", str(tmp_path / "g"), "--option", "reg_covar=0.01")
    assert out.returncode == 0, out.stderr
    import probgen as pg
    assert pg.load(tmp_path / "g" / "fit.pt").options["reg_covar"] == 0.01
    assert main(["fit", "gmm", "--steps", "2", "--out", str(tmp_path / "h"), "--option", "bogus=1"]) == 2
    (tmp_path / "afile").write_text("")
    assert main(["fit", "gmm", "--steps", "2", "--out", str(tmp_path / "afile")]) == 2
    assert main(["fit", "gmm", "--steps", "2", "--out", "/proc/no/such/dir"]) == 2


@pytest.mark.parametrize("name", sorted(pg.registry.models()))
def test_history_png_draws_the_objective_of_every_model(name, tmp_path):
    """`probgen fit`'s history.png plots fit.objective for every built-in model's default
    engine (it once said "no per-step curve" for 7 of 15 models that recorded one)."""
    from probgen.cli import plot_history
    model, data = pg.registry.models()[name].example(seed=0)
    fit = pg.fit(model, data, steps=3, seed=0, progress=False)
    assert plot_history(fit, str(tmp_path / "h.png")) == len(fit.history)
    assert fit.history or fit.state.get("closed_form"), "only a closed-form fit records no step"
    assert (tmp_path / "h.png").stat().st_size > 1000
