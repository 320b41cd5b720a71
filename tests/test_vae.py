"""The VAE and the IWAE-k bound: ELBO ≤ IWAE-k ≤ log p(x) against exact enumeration on a tiny
discrete-latent model, and a linear-Gaussian VAE against probabilistic PCA's closed form."""
import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg
from probgen.data import split
from probgen.inference.svi.autoencoder import iwae_bound, log_importance_weights
from probgen.models import VAE

# ---- a tiny model with a discrete latent: z ∈ {0, 1, 2}, x | z ~ Bernoulli(θ_z)^4 -----------
PI = torch.tensor([0.5, 0.3, 0.2])
THETA = torch.tensor([[0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.9, 0.7], [0.5, 0.5, 0.5, 0.9]])
A = torch.tensor([[1.0, -0.5, 0.0], [0.5, -1.0, 0.2], [-1.0, 1.0, 0.3], [0.0, 0.4, -0.2]])


def discrete_model(x):
    with pyro.plate("data", len(x), dim=-1):
        z = pyro.sample("z", dist.Categorical(PI))
        pyro.sample("x", dist.Bernoulli(THETA[z]).to_event(1), obs=x)


def discrete_guide(x):
    # a deliberately imperfect amortised q(z | x), so that every bound is strict
    with pyro.plate("data", len(x), dim=-1):
        pyro.sample("z", dist.Categorical(logits=x @ A))


def exact_quantities(x, ks):
    """log p(x), and E_q[IWAE-k] exactly: with K = 3 states the estimator depends only on the
    counts n ~ Multinomial(k, q(·|x)), IWAE-k = log Σ_j n_j w_j / k, so its expectation is a
    finite sum over the (k+1)(k+2)/2 count vectors."""
    log_joint = torch.log(PI) + dist.Bernoulli(THETA).log_prob(x[:, None, :]).sum(-1)    # (N, K)
    log_q = torch.log_softmax(x @ A, -1)
    log_w = log_joint - log_q
    out = {}
    for k in ks:
        counts = torch.tensor([c for c in itertools.product(range(k + 1), repeat=3) if sum(c) == k],
                              dtype=torch.float64)                                      # (M, K)
        log_multinom = (torch.lgamma(torch.tensor(k + 1.0)) - torch.lgamma(counts + 1).sum(-1))
        log_pmf = log_multinom + (counts[None] * log_q[:, None].double()).nan_to_num(0).sum(-1)   # (N, M)
        value = torch.logsumexp(torch.log(counts[None]) + log_w[:, None].double(), -1) - math.log(k)
        out[k] = (log_pmf.exp() * value).sum(-1)
    return torch.logsumexp(log_joint, -1).double(), out


def test_iwae_bounds_on_an_enumerable_discrete_model():
    x = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 1], [0, 1, 0, 1], [1, 1, 1, 1]])
    ks = (1, 2, 5, 20)
    log_px, expected = exact_quantities(x, ks)
    # the theory on this model, exactly: ELBO = E[IWAE-1] < E[IWAE-2] < ... < log p(x)
    for a, b in zip(ks, ks[1:]):
        assert (expected[a] < expected[b]).all()
    assert (expected[ks[-1]] < log_px).all()
    # our estimator: R independent IWAE-k draws per example; their mean must match the exact
    # expectation within 4 standard errors (a false alarm has probability < 1e-4 per check)
    pyro.set_rng_seed(0)
    R = 4000
    means, ses = {}, {}
    for k in ks:
        lw = log_importance_weights(discrete_model, discrete_guide, (x,), k * R).reshape(R, k, -1)
        draws = torch.logsumexp(lw, 1) - math.log(k)                                        # (R, N)
        se = draws.std(0) / math.sqrt(R)
        means[k] = draws.mean(0)
        ses[k] = se.pow(2).sum().sqrt().item() / len(x)    # standard error of the pooled mean
        assert ((means[k].double() - expected[k]).abs() <= 4 * se.double() + 1e-6).all(), (k, means[k], expected[k])
    # IWAE-k increases with k in expectation, visibly so in the Monte Carlo means pooled over
    # the examples: first check that each exact gap is over 4 standard errors of the pooled
    # difference (so the test has the power to see it), then that the estimates keep the order
    for a, b in zip(ks, ks[1:]):
        gap = (expected[b] - expected[a]).mean().item()
        assert gap > 4 * math.sqrt(ses[a] ** 2 + ses[b] ** 2)
        assert means[a].mean() < means[b].mean()
    # and the public function is the same estimator (k = 1: the ELBO)
    assert iwae_bound(discrete_model, discrete_guide, (x,), 3).shape == (len(x),)


# ---- the linear-Gaussian VAE reaches probabilistic PCA ----------------------------------------

def ppca_log_likelihood(x, q):
    """Per-example maximum log-likelihood of PPCA (Tipping & Bishop 1999, eqs. 7–8): with the
    sample covariance's eigenvalues λ_1 ≥ … ≥ λ_D, σ² = mean of the D − q smallest and
    log|C| = Σ_{j≤q} log λ_j + (D − q) log σ², tr(C⁻¹S) = D at the optimum."""
    n, d = x.shape
    xc = x - x.mean(0)
    lam = torch.linalg.eigvalsh(xc.T @ xc / n).flip(0)
    s2 = lam[q:].mean()
    logdet = lam[:q].log().sum() + (d - q) * s2.log()
    return float(-0.5 * (d * math.log(2 * math.pi) + logdet + d))


def linear_vae_exact_log_prob(params, x):
    """log p(x) of the fitted linear-Gaussian decoder: x ~ N(b0, W1 W1ᵀ + scale² I)."""
    W, b, s = params["W1"].double(), params["b0"].double(), params["scale"].double()
    cov = W @ W.T + s ** 2 * torch.eye(len(b), dtype=torch.float64)
    return dist.MultivariateNormal(b, cov).log_prob(x.double())


@pytest.fixture(scope="module")
def linear_vae():
    g = torch.Generator().manual_seed(0)
    n, d, q = 300, 5, 2
    W = torch.randn(d, q, generator=g) * torch.tensor([2.0, 1.0])
    x = torch.randn(n, q, generator=g) @ W.T + 0.5 * torch.randn(n, d, generator=g) + 1.0
    pyro.clear_param_store()
    fit = pg.fit(VAE(q, d, likelihood="gaussian"), x, steps=1000, seed=0, lr=0.06, lr_decay=0.01,
                 batch_size=n, validation=0, progress=False)
    return fit, x, q


def test_linear_vae_reaches_the_ppca_likelihood(linear_vae):
    fit, x, q = linear_vae
    ppca = ppca_log_likelihood(x.double(), q)
    vae = linear_vae_exact_log_prob(fit.params, x).mean().item()
    # PPCA's value is the maximum of the same model's likelihood, so the VAE cannot exceed it
    # (up to float32 parameters). A linear VAE with a diagonal Gaussian encoder has PPCA's
    # maximum as its ELBO optimum (Lucas et al. 2019). We ask for 0.02 nats per example:
    # four times below the data's own sampling noise on that mean (sd(log p)/√300 ≈ 0.08).
    assert vae <= ppca + 1e-4
    assert ppca - vae < 0.02, (ppca, vae)


def test_elbo_below_iwae_below_exact_on_the_linear_vae(linear_vae):
    fit, x, _ = linear_vae
    exact = linear_vae_exact_log_prob(fit.params, x)
    elbo = fit.log_prob(x).double()          # k = 1
    iwae = fit.log_prob(x, num_samples=200).double()
    assert fit.log_prob_kind == "bound"
    # per-example Monte Carlo noise: compare means over the 300 examples with 4 standard errors
    se = lambda v: v.std().item() / math.sqrt(len(v))  # noqa: E731
    assert (elbo - exact).mean().item() <= 4 * se(elbo - exact)
    assert (iwae - exact).mean().item() <= 4 * se(iwae - exact)
    assert (iwae - elbo).mean().item() >= -4 * se(iwae - elbo)
    # at k = 200 the bound is tight for a near-exact Gaussian posterior
    assert (exact - iwae).mean().item() < 0.01


# ---- the VAE on binarised digits ---------------------------------------------------------------

def test_vae_on_binary_digits_queries_and_bounds():
    x = pg.load_dataset("digits-binary").float()
    x_train, x_test = split(x)
    x_train, x_test = x_train[:400], x_test[:100]
    fit = pg.fit(VAE(4, (64, 32)), x_train, steps=8, seed=0, lr=1e-2, batch_size=50, progress=False)
    assert len(fit.history) == 8 and all("val_loss" in h for h in fit.history)
    assert fit.history[-1]["loss"] < fit.history[0]["loss"]
    codes = pg.infer(fit, x_test, query="encode")       # the posterior mean: deterministic
    assert codes.shape == (100, 4) and torch.equal(codes, pg.infer(fit, x_test, query="encode"))
    recon = pg.infer(fit, x_test, query="reconstruct")
    assert recon.shape == (100, 64) and ((recon > 0) & (recon < 1)).all()
    s = fit.sample(6, seed=1)
    assert s.shape == (6, 64) and ((s == 0) | (s == 1)).all()
    lp1, lp50 = fit.log_prob(x_test).mean().item(), fit.log_prob(x_test, num_samples=50).mean().item()
    assert lp1 < lp50 < 0
    with pytest.raises(ValueError, match="num_samples"):
        fit.log_prob(x_test, num_samples=0)


def test_vae_bad_input():
    with pytest.raises(ValueError, match="likelihood"):
        VAE(2, 6, likelihood="poisson")
    with pytest.raises(ValueError, match="code size"):
        VAE(0, 6)
    with pytest.raises(ValueError, match="0/1 data"):
        pg.fit(VAE(2, 6), torch.rand(5, 6), steps=1)


# ---- the inverse autoregressive flow encoder ---------------------------------------------------

def _flow_vae_params(seed=0):
    model = VAE(3, (6, 4), flow_layers=2)
    g = torch.Generator().manual_seed(seed)
    params = {k: (v + 0.3 * torch.randn(v.shape, generator=g) if k.startswith("iaf") else v)
              for k, v in model.init_params(seed=seed).items()}
    return model, params


def test_iaf_log_determinant_equals_autograd_jacobian():
    model, params = _flow_vae_params()
    params = {k: v.double() for k, v in params.items()}
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, logdet = model.flow(params, z)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: model.flow(params, v[None])[0][0], zi)
                       for zi in z])
    # the MADE masks make each step triangular, so the gates' log-product is the whole log|det|
    torch.testing.assert_close(logdet, torch.linalg.slogdet(jac).logabsdet, rtol=1e-10, atol=1e-12)


def test_iaf_encoder_is_a_normalised_density():
    """With the decoder cut off (W1 = 0) x is independent of h and p(x) is exact; then
    E_q[p(x, h) / q(h | x)] = p(x) for *any* normalised q, so the importance weights computed
    through the flow guide must average to p(x)."""
    from probgen.inference.svi.autoencoder import Substituted
    model, params = _flow_vae_params()
    params["W1"] = torch.zeros_like(params["W1"])
    # base scale ≈ 1 ≥ the prior's / √2, so the weights p(h)/q(h) have finite variance
    params["enc_scale_W"] = torch.zeros_like(params["enc_scale_W"])
    params["enc_scale_b"] = torch.full((3,), math.log(math.e - 1))
    x = torch.tensor([[1.0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 0, 1]])
    log_px = dist.Bernoulli(logits=params["b0"]).log_prob(x).sum(-1)
    pyro.set_rng_seed(0)
    lw = log_importance_weights(Substituted(model.program, params), Substituted(model.guide, params), (x,), 20000)
    ratio = torch.exp(lw - log_px)                                          # (k, N), mean 1
    se = ratio.std(0) / math.sqrt(len(ratio))
    assert ((ratio.mean(0) - 1).abs() < 4 * se).all(), (ratio.mean(0), se)


def test_flow_vae_fits_and_bounds():
    model, x = VAE(2, (6, 4), flow_layers=2), VAE.example()[1]
    fit = pg.fit(model, x, steps=3, seed=0, progress=False)
    assert fit.log_prob_kind == "bound" and torch.isfinite(fit.log_prob(x, num_samples=20)).all()
    assert {"iaf1_W", "iaf2_s_b"} <= set(fit.params)
    assert pg.infer(fit, x, query="encode").shape == (len(x), 2)
