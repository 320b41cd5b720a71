"""Model selection (``pg.select``): the criteria against scikit-learn's and hmmlearn's,
the generating size found on well-separated data, and the CLI."""
import math

import numpy as np
import pytest
import torch

import probgen as pg
from probgen.cli import main
from probgen.models import HMM, BayesianNetwork, CategoricalMixture, GaussianMixture


def blobs(seed=0, n=150):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.0, 6.0]])
    return torch.cat([torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.5 + c for c in centres])


def three_state_hmm(seed=0):
    model = HMM(3, "gaussian", dim=1)
    params = {"initial": torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
              "transition": torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]],
                                         dtype=torch.float64),
              "loc": torch.tensor([[-6.0], [0.0], [6.0]], dtype=torch.float64),
              "scale": torch.ones(3, 1, dtype=torch.float64)}
    return model.sample(params, 10, seed=seed, T=60)


@pytest.mark.parametrize("criterion", ["bic", "aic", "heldout"])
def test_select_picks_the_generating_number_of_gmm_components(criterion):
    s = pg.select(lambda k: GaussianMixture(k, 2), blobs(), values=range(1, 7), criterion=criterion, seed=0,
                  progress=False, n_init=3)
    assert s.best_value == 3
    assert [r["value"] for r in s.rows] == list(range(1, 7))
    assert s.best.model.k == 3 and s.best.params["loc"].shape == (3, 2)
    assert len(s.best.model.check_data(blobs())) == 450  # "heldout": the best refitted on all the data
    assert "*3" in s.table and s.criterion in s.table


def test_select_picks_the_generating_number_of_hmm_states():
    x = three_state_hmm()
    s = pg.select(lambda k: HMM(k, "gaussian", dim=1), x, values=range(1, 6), seed=0, progress=False, n_init=2)
    assert s.best_value == 3
    rows = {r["value"]: r for r in s.rows}
    # N = every time step (600), as hmmlearn counts it
    assert rows[3]["criterion"] == pytest.approx(-2 * rows[3]["log_likelihood"] + 14 * math.log(600), rel=1e-12)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_bic_and_aic_equal_scikit_learn_for_the_same_parameters(covariance):
    sk = pytest.importorskip("sklearn.mixture")
    x = blobs(1)
    s_bic = pg.select(lambda k: GaussianMixture(k, 2, covariance), x, values=[2, 3], seed=0, progress=False)
    s_aic = pg.select(lambda k: GaussianMixture(k, 2, covariance), x, values=[2, 3], criterion="aic", seed=0,
                      progress=False)
    for bic_row, aic_row in zip(s_bic.rows, s_aic.rows):
        p = s_bic.fits[bic_row["value"]].params
        ref = sk.GaussianMixture(bic_row["value"], covariance_type=covariance)
        ref.weights_, ref.means_ = p["weights"].numpy(), p["loc"].numpy()
        if covariance == "full":
            L = p["scale_tril"]
            ref.covariances_ = (L @ L.transpose(-1, -2)).numpy()
            ref.precisions_cholesky_ = torch.linalg.inv(L).transpose(-1, -2).numpy()
        else:
            ref.covariances_ = (p["scale"] ** 2).numpy()
            ref.precisions_cholesky_ = (1 / p["scale"]).numpy()
        assert bic_row["criterion"] == pytest.approx(ref.bic(x.numpy()), rel=1e-8)
        assert aic_row["criterion"] == pytest.approx(ref.aic(x.numpy()), rel=1e-8)
        assert bic_row["num_free_params"] == ref._n_parameters()


@pytest.mark.parametrize("emission,covariance", [("categorical", None), ("gaussian", "diag"),
                                                 ("gaussian", "full"), ("poisson", None)])
def test_hmm_bic_equals_hmmlearn_for_the_same_parameters(emission, covariance):
    hl = pytest.importorskip("hmmlearn.hmm")
    opts = {"categorical": {"n_symbols": 4}, "gaussian": {"dim": 2, "covariance": covariance},
            "poisson": {}}[emission]
    model = HMM(3, emission, **opts)
    params = model.init_params(None, seed=1) if emission != "gaussian" else model.init_params(
        torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), seed=1)
    if emission == "poisson":
        params["rate"] = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    x = model.sample(params, 4, seed=2, T=30)
    p = {k: v.numpy() for k, v in params.items()}
    if emission == "categorical":
        ref = hl.CategoricalHMM(3, n_features=4)
        ref.emissionprob_ = p["probs"]
    elif emission == "poisson":
        ref = hl.PoissonHMM(3)
        ref.lambdas_, ref.n_features = p["rate"][:, None], 1
    else:
        ref = hl.GaussianHMM(3, covariance_type=covariance)
        ref.means_, ref.n_features = p["loc"], 2
        ref.covars_ = p["scale"] ** 2 if covariance == "diag" else p["scale_tril"] @ p["scale_tril"].transpose(0, 2, 1)
    ref.startprob_, ref.transmat_ = p["initial"], p["transition"]
    xs = x.numpy().reshape(4 * 30, -1).astype(np.int64 if emission == "categorical" else np.float64)
    ll = float(model.log_prob(params, x).sum())
    n = model.num_free_params(params)
    assert n == sum(ref._get_n_fit_scalars_per_param().values())
    assert -2 * ll + n * math.log(120) == pytest.approx(ref.bic(xs, lengths=[30] * 4), rel=1e-8)


def test_num_free_params_of_the_discrete_families():
    probs = torch.full((3, 5, 4), 0.25, dtype=torch.float64)
    assert CategoricalMixture(3).num_free_params({"probs": probs}) == 2 + 3 * 5 * 3
    net, _ = BayesianNetwork.example()
    # Σ_v q_v (r_v − 1), counted from the tables' shapes
    want = sum(int(np.prod(net.table_shape(v)[:-1])) * (net.table_shape(v)[-1] - 1) for v in net.variables)
    assert net.num_free_params() == want and want > 0


def test_select_refuses_what_it_cannot_score():
    x = blobs()
    with pytest.raises(ValueError, match="criterion must be one of"):
        pg.select(lambda k: GaussianMixture(k, 2), x, values=[1, 2], criterion="mdl")
    with pytest.raises(ValueError, match="values is empty"):
        pg.select(lambda k: GaussianMixture(k, 2), x, values=[])
    with pytest.raises(ValueError, match="distinct"):
        pg.select(lambda k: GaussianMixture(k, 2), x, values=[2, 2])
    with pytest.raises(ValueError, match="exact log-likelihood"):  # CAVI's log_prob is a posterior predictive
        pg.select(lambda k: GaussianMixture(k, 2, bayesian=True), x, values=[1, 2], engine="meanfield")
    with pytest.raises(ValueError, match="no number of free parameters"):
        GaussianMixture(2, 2, bayesian=True).num_free_params()
    with pytest.raises(ValueError, match="cannot hold out"):  # one sequence cannot be split
        pg.select(lambda k: HMM(k, "gaussian", dim=1), three_state_hmm()[0], values=[1, 2], criterion="heldout")
    with pytest.raises(ValueError, match="test_fraction"):
        pg.select(lambda k: GaussianMixture(k, 2), x, values=[1, 2], criterion="heldout", test_fraction=1.5)


def test_cli_select_prints_the_table_and_writes_the_curve(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, blobs().numpy())
    png = tmp_path / "curve.png"
    assert main(["select", "gmm", "--data", str(path), "-k", "1:5", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "bic" in out.splitlines()[0] and "*3" in out and "best k=3 by bic" in out
    assert png.stat().st_size > 1000
    assert main(["select", "gmm", "--data", str(path), "-k", "x:5"]) == 2
    assert "-k expects" in capsys.readouterr().err
