"""Autoencoders: the contractive penalty against autograd, held-out reconstruction for every
kind, sparsity of the Laplace-prior codes, early stopping, queries, sampling and bad input."""
import math

import pyro
import pytest
import torch
from pyro import poutine

import probgen as pg
from probgen.data import split
from probgen.inference.svi.autoencoder import Substituted
from probgen.loops.gradient import split as validation_split
from probgen.models import Autoencoder

CODE = 16
KINDS = [("undercomplete", 64), ("sparse", 64), ("denoising", 64), ("contractive", 64), ("deep", (64, 32)),
         ("stochastic", 64)]


@pytest.fixture(scope="module")
def digits():
    x = pg.load_dataset("digits-binary").float()
    x_train, x_test = split(x)
    return x_train[:600], x_test[:200]


_FITS: dict = {}


def trained(kind, dims, digits):
    """One short training run per kind, shared by the tests of this file."""
    if kind not in _FITS:
        pyro.clear_param_store()
        _FITS[kind] = pg.fit(Autoencoder(kind, dims, code_dim=CODE), digits[0], steps=10, seed=0,
                             progress=False, batch_size=50, lr=1e-2, validation=0)
    return _FITS[kind]


def mse(fit, x):
    return ((pg.infer(fit, x, query="reconstruct") - x) ** 2).mean().item()


# ---- the contractive penalty ----------------------------------------------------------

def _autograd_penalty(model, params, x):
    """Σ_ij (∂f_j/∂x_i)² per example, one autograd Jacobian per example (the oracle)."""
    return torch.stack([torch.autograd.functional.jacobian(lambda v: model.encode(params, v[None])[0], xi)
                        .pow(2).sum() for xi in x])


@pytest.mark.parametrize("dims,act,code_act", [(5, "tanh", "sigmoid"), (5, "tanh", "tanh"),
                                               ((5, 7, 6), "tanh", "sigmoid"), ((5, 7), "softplus", "identity")])
def test_contractive_penalty_equals_autograd_jacobian(dims, act, code_act):
    model = Autoencoder("contractive", dims, code_dim=3, likelihood="gaussian", activation=act,
                        code_activation=code_act)
    params = {k: v.double() for k, v in model.init_params(seed=1).items()}
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # both sides are exact; float64 leaves only rounding error (~1e-15 relative)
    torch.testing.assert_close(model.contractive_penalty(params, x), _autograd_penalty(model, params, x),
                               rtol=1e-10, atol=1e-12)


def test_contractive_penalty_enters_the_loss_with_weight_lambda():
    model = Autoencoder("contractive", 5, code_dim=3, likelihood="gaussian", contraction=0.7)
    params = model.init_params(seed=0)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    site = poutine.trace(Substituted(model.guide, params)).get_trace(x).nodes["contractive"]
    # a guide factor's log-density is subtracted from the ELBO: loss += λ‖J‖²
    torch.testing.assert_close(site["fn"].log_prob(site["value"]),
                               0.7 * model.contractive_penalty(params, x))


# ---- training lowers held-out reconstruction error ------------------------------------

@pytest.mark.parametrize("kind,dims", KINDS)
def test_each_kind_lowers_heldout_reconstruction_error(kind, dims, digits):
    x_train, x_test = digits
    before = mse(pg.fit(Autoencoder(kind, dims, code_dim=CODE), x_train, steps=0, seed=0, progress=False), x_test)
    after = mse(trained(kind, dims, digits), x_test)
    # Reference: rank-16 PCA, the best *linear* reconstruction, fitted on the same training set.
    mu = x_train.mean(0)
    v = torch.linalg.svd(x_train - mu, full_matrices=False).Vh[:CODE]
    pca = (((x_test - mu) @ v.T @ v + mu - x_test) ** 2).mean().item()
    assert pca < before
    # At initialisation the decoder outputs ≈ the mean image (b0 = logit of the mean, small
    # weights). A trained autoencoder must win back at least a third of what PCA gains over
    # it; the regularised kinds (sparse, contractive) trade some reconstruction for their
    # penalty, which is why we do not ask for PCA's whole gain.
    assert after < before - (before - pca) / 3, (kind, before, after, pca)


def test_sparse_codes_are_sparser_than_undercomplete_ones(digits):
    _, x_test = digits

    def hoyer(h):
        # Hoyer (2004) sparseness: 0 for equal magnitudes, 1 for one nonzero; scale-invariant,
        # so a decoder that grows its weights to shrink the codes cannot fake it
        n = h.shape[1]
        return ((math.sqrt(n) - h.abs().sum(1) / h.norm(dim=1)) / (math.sqrt(n) - 1)).mean().item()

    dense = hoyer(pg.infer(trained("undercomplete", 64, digits), x_test, query="encode"))
    sparse = hoyer(pg.infer(trained("sparse", 64, digits), x_test, query="encode"))
    # For n = 16 iid codes, Hoyer's measure is ≈ 0.27 for Gaussian entries (E|h|/√E h² = √(2/π))
    # and ≈ 0.39 for Laplace entries (1/√2): codes that follow the Laplace prior sit 0.12
    # higher. We ask for half of that gap.
    assert sparse > dense + 0.06, (sparse, dense)


# ---- the engine: early stopping, queries, sampling, log_prob -------------------------

def test_early_stopping_keeps_the_best_validation_epoch():
    model, x = Autoencoder("undercomplete", 6, code_dim=2, likelihood="bernoulli"), None
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(60, 6, generator=g) < 0.3).float()
    fit = pg.fit(model, x, steps=12, seed=0, progress=False, lr=0.05, batch_size=8, validation=0.25, patience=3)
    vals = [h["val_loss"] for h in fit.history]
    best = min(range(len(vals)), key=vals.__getitem__)
    assert len(vals) == 12 or len(vals) - 1 - best == 3  # stopped exactly `patience` epochs after the best
    _, x_val = validation_split(x, 0.25, 0)
    # a point-mass encoder without corruption makes the validation loss deterministic:
    # the returned parameters must be the best epoch's (float32 rounding only)
    nll = -fit.model.recon_log_prob(fit.params, x_val).mean().item()
    assert nll == pytest.approx(vals[best], rel=1e-5)


def test_queries_sampling_and_log_prob(digits):
    x_train, x_test = digits
    fit = trained("undercomplete", 64, digits)
    codes = pg.infer(fit, x_test, query="encode")   # the engine that made the fit answers
    assert codes.shape == (len(x_test), CODE)
    r = pg.infer(fit, x_test, query="reconstruct", engine="svi")
    assert r.shape == x_test.shape and (r >= 0).all() and (r <= 1).all()
    s = fit.sample(7, seed=0)
    assert s.shape == (7, 64) and ((s == 0) | (s == 1)).all()
    assert torch.equal(s, fit.sample(7, seed=0))
    # a point-mass encoder: log_prob is log p(x | f(x)), the negative Bernoulli reconstruction error
    assert fit.log_prob_kind == "estimate"
    bce = torch.nn.functional.binary_cross_entropy(r.clamp(1e-7, 1 - 1e-7), x_test, reduction="none").sum(1)
    torch.testing.assert_close(fit.log_prob(x_test), -bce, rtol=1e-4, atol=1e-3)
    # the stochastic kind has a proper prior and encoder: its log_prob is a bound
    assert trained("stochastic", 64, digits).log_prob_kind == "bound"


def test_denoising_masks_inputs_only_in_training():
    model = Autoencoder("denoising", 64, code_dim=8, noise=0.3)
    ones = torch.ones(200, 64)
    masked = 1 - model.corrupt(ones).mean().item()
    # 12 800 Bernoulli(0.3) masks: sd of the fraction = √(0.3·0.7/12800) ≈ 0.004; 5 sd
    assert abs(masked - 0.3) < 0.02
    params = model.init_params(seed=0)
    tr = poutine.trace(Substituted(model.guide, params)).get_trace(ones[:4])
    torch.testing.assert_close(tr.nodes["h"]["value"], model.encode(params, ones[:4]))


def test_structure_is_latent_to_observed():
    g = pg.graph(Autoencoder("sparse", (64, 32), code_dim=8), params=True)
    assert g.nodes["h"]["kind"] == "latent" and g.nodes["x"]["kind"] == "observed"
    assert g.has_edge("h", "x") and g.nodes["h"]["distribution"] == "Laplace"
    assert {"W1", "W2", "b0", "b1"} <= set(g.predecessors("x"))
    assert {"enc_W1", "enc_loc_W"} <= set(g.predecessors("h"))


def test_bad_input_gives_clear_errors():
    model = Autoencoder("undercomplete", 6, code_dim=2)
    with pytest.raises(ValueError, match="kind"):
        Autoencoder("wide", 6, code_dim=2)
    with pytest.raises(ValueError, match="code_dim < D"):
        Autoencoder("undercomplete", 6, code_dim=6)
    with pytest.raises(ValueError, match="hidden layers"):
        Autoencoder("deep", 6, code_dim=2)
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        pg.fit(model, torch.zeros(5, 4), steps=1)
    with pytest.raises(ValueError, match="0/1 data"):
        pg.fit(model, torch.full((5, 6), 0.5), steps=1)
    with pytest.raises(ValueError, match="NaN"):
        pg.fit(model, torch.tensor([[0.0, 1, 0, 1, 0, float("nan")]]), steps=1)
    with pytest.raises(ValueError, match="unknown svi options.*known: batch_size"):
        pg.fit(model, torch.zeros(5, 6), steps=1, momentum=0.9)
    with pytest.raises(ValueError, match="batch_size"):
        pg.fit(model, torch.zeros(5, 6), steps=1, batch_size=0)
    with pytest.raises(ValueError, match="needs fitted parameters"):
        pg.infer(model, torch.zeros(5, 6), query="encode", engine="svi")
    with pytest.raises(ValueError, match="init names"):
        pg.fit(model, torch.zeros(5, 6), steps=1, init={"V": torch.zeros(2)})
