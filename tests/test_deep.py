"""GANs, flows, neural energy models and diffusion: oracles from closed forms."""
import math

import pytest
import torch

import probgen as pg
from probgen.evaluate import mmd2
from probgen.models import GAN, Diffusion, EnergyModel, Flow


# ---- diffusion -------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_marginals_match_closed_form(schedule):
    """Running the chain q(x_t|x_{t-1}) step by step gives q(x_t|x_0) = N(√ᾱ x0, 1−ᾱ)."""
    m = Diffusion(1, steps=50, schedule=schedule, hidden=(8,))
    g = torch.Generator().manual_seed(0)
    n, x0 = 200_000, torch.full((200_000, 1), 1.5, dtype=torch.float64)
    x = x0.clone()
    for t in range(30):
        x = (1 - m.betas[t]).sqrt() * x + m.betas[t].sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    ab = m.alphas_cumprod[29]
    # standard errors of the mean / variance with n = 2e5: sd/√n ≈ 2e-3; 5σ bounds
    assert abs(x.mean() - ab.sqrt() * 1.5) < 5 * (1 - ab).sqrt() / math.sqrt(n)
    assert abs(x.var() - (1 - ab)) < 5 * (1 - ab) * math.sqrt(2 / n)
    # and q_sample draws from the same closed form
    xs = m.q_sample(x0, torch.full((n,), 29), torch.randn(x0.shape, generator=g, dtype=torch.float64))
    assert abs(xs.mean() - ab.sqrt() * 1.5) < 5 * (1 - ab).sqrt() / math.sqrt(n)


def test_posterior_matches_bayes_rule():
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): product of Gaussians (Ho eq. 6-7)."""
    m = Diffusion(3, steps=40, schedule="cosine", hidden=(8,))
    x0, xt = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    for t in [1, 7, 39]:
        tt = torch.full((5,), t)
        mean, var = m.q_posterior(x0, xt, tt)
        a, b, abp = 1 - m.betas[t], m.betas[t], m.alphas_cumprod[t - 1]
        prec = a / b + 1 / (1 - abp)  # precisions add
        expect_mean = (a.sqrt() * xt / b + abp.sqrt() * x0 / (1 - abp)) / prec
        torch.testing.assert_close(mean, expect_mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(var.expand(5, 3), (1 / prec).expand(5, 3), rtol=1e-10, atol=1e-12)


def test_posterior_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    m = Diffusion(2, steps=100, schedule="linear", hidden=(8,))
    sched = diffusers.DDPMScheduler(num_train_timesteps=100, beta_start=float(m.betas[0]),
                                    beta_end=float(m.betas[-1]), variance_type="fixed_small")
    torch.testing.assert_close(sched.alphas_cumprod.double(), m.alphas_cumprod, rtol=1e-5, atol=1e-6)
    x0, xt = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    for t in [5, 50, 99]:
        _, var = m.q_posterior(x0, xt, torch.full((4,), t))
        torch.testing.assert_close(var[0, 0].float(), sched._get_variance(t).float(), rtol=1e-4, atol=1e-7)


def test_diffusion_learns_and_bound_is_a_bound():
    torch.manual_seed(0)
    x = torch.randn(2000, 2) * torch.tensor([0.5, 2.0]) + torch.tensor([1.0, -1.0])
    fit = pg.fit(Diffusion(2, steps=50, hidden=(64, 64)), x, steps=3000, seed=0, progress=False)
    s = fit.sample(2000, seed=1)
    assert fit.history[-1]["loss"] < fit.history[0]["loss"]
    # sample moments of 2000 draws: the mean's standard error is ≤ 2/√2000 ≈ 0.045
    torch.testing.assert_close(s.mean(0), torch.tensor([1.0, -1.0]), atol=0.25, rtol=0)
    torch.testing.assert_close(s.std(0), torch.tensor([0.5, 2.0]), atol=0.0, rtol=0.2)
    # the bound is below the true log-density of the generating Gaussian (on average over data)
    true = torch.distributions.Normal(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0])).log_prob(x[:500]).sum(-1)
    assert fit.log_prob(x[:500]).mean() < true.mean()
    ddim = fit.model.sample(fit.params, 500, seed=0, method="ddim", ddim_steps=25)
    assert ddim.shape == (500, 2) and torch.isfinite(ddim).all()


def test_diffusion_params_are_the_averaged_weights():
    x = torch.randn(256, 2)
    raw = pg.fit(Diffusion(2, steps=10, hidden=(8,)), x, steps=50, seed=0, ema=None, progress=False)
    avg = pg.fit(Diffusion(2, steps=10, hidden=(8,)), x, steps=50, seed=0, progress=False)
    # the same training run (averaging does not feed back); the fit keeps the average
    assert [h["loss"] for h in raw.history] == [h["loss"] for h in avg.history]
    assert any(not torch.equal(raw.params[k], avg.params[k]) for k in raw.params if "denoiser" in k)
    with pytest.raises(ValueError, match="ema must be in"):
        pg.fit(Diffusion(2, steps=10, hidden=(8,)), x, steps=5, ema=2.0, progress=False)


def test_denoiser_with_wrong_output_shape_is_refused():
    class Bad(torch.nn.Module):
        def forward(self, x, t):
            return x[:, :1]
    with pytest.raises(ValueError, match="denoiser must return"):
        Diffusion(3, steps=10, denoiser=Bad())


# ---- flows -----------------------------------------------------------------------------

@pytest.fixture
def float64():
    """float64 throughout, so that 1e-5 measures the algorithm, not float32 rounding."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("kind", ["realnvp", "maf", "spline"])
def test_flow_inverts_and_logdet_is_the_jacobian(kind, float64):
    torch.manual_seed(0)
    flow = Flow(3, kind=kind, transforms=3, hidden=(16,))
    for p in flow.net.parameters():  # move off the identity initialisation
        p.data.add_(0.1 * torch.randn_like(p))
    ts = flow.net.transforms()
    comp = torch.distributions.transforms.ComposeTransform(ts)
    z = torch.randn(7, 3, dtype=torch.float64)
    x = comp(z)
    torch.testing.assert_close(comp.inv(x), z, atol=1e-5, rtol=0)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: comp(v.unsqueeze(0)).squeeze(0), z[i])
        torch.testing.assert_close(comp.log_abs_det_jacobian(z[i:i + 1], x[i:i + 1]).reshape(()),
                                   torch.linalg.slogdet(jac)[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["realnvp", "maf", "spline"])
def test_flow_fitted_to_a_gaussian_recovers_mean_and_covariance(kind):
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]])
    x = torch.randn(4000, 2, generator=g) @ torch.linalg.cholesky(cov).T + torch.tensor([2.0, -1.0])
    fit = pg.fit(Flow(2, kind=kind, transforms=3, hidden=(32,)), x, steps=800, seed=0, progress=False)
    s = fit.sample(20000, seed=0)
    # 4000 training points: the sample mean's own error is ≈ √(2/4000) ≈ 0.02; allow 0.1
    torch.testing.assert_close(s.mean(0), torch.tensor([2.0, -1.0]), atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(s.T), cov, atol=0.15, rtol=0.1)
    true = torch.distributions.MultivariateNormal(torch.tensor([2.0, -1.0]), cov).log_prob(x).mean()
    assert abs(fit.log_prob(x).mean() - true) < 0.05


def test_flow_bad_input():
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        pg.fit(Flow(2), torch.randn(10, 3), steps=1)
    x = torch.randn(10, 2)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pg.fit(Flow(2), x, steps=1)
    with pytest.raises(ValueError, match=r"dim >= 2"):
        Flow(1, kind="realnvp")


@pytest.mark.parametrize("kind", ["realnvp", "spline"])
def test_flow_as_svi_guide(kind):
    import pyro
    import pyro.distributions as dist

    def model(y):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("N", len(y)):
            pyro.sample("y", dist.Normal(z, 0.5).to_event(1), obs=y)

    y = torch.randn(20, 2) * 0.5 + torch.tensor([1.0, -2.0])
    guide = Flow(2, kind=kind, transforms=2, hidden=(16,)).as_guide(model)
    fit = pg.fit(model, y, engine="svi", guide=guide, steps=1500, lr=0.01, seed=0, progress=False)
    draws = torch.stack([guide()["z"] for _ in range(2000)])
    post_prec = 1 + len(y) / 0.25  # conjugate posterior: precision 1 + N/σ²
    post_mean = y.sum(0) / 0.25 / post_prec
    losses = torch.tensor([h["loss"] for h in fit.history])
    assert losses[-100:].mean() < losses[:100].mean()  # one-particle ELBO estimates: compare averages
    # posterior sd ≈ 0.11; 2000 draws: the mean's Monte Carlo error ≈ 0.0025; optimisation error dominates
    torch.testing.assert_close(draws.mean(0), post_mean, atol=0.05, rtol=0)


# ---- GANs ------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["non-saturating", "minimax"])
def test_gan_matches_a_1d_gaussian(loss):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 1, generator=g) * 0.5 + 2.0
    fit = pg.fit(GAN(1, latent_dim=1, hidden=(32, 32)), x, steps=3000, seed=0, loss=loss,
                 gradient_penalty=1.0, progress=False)
    s = fit.sample(5000, seed=0)
    assert abs(s.mean() - 2.0) < 0.1
    assert abs(s.std() - 0.5) < 0.1
    assert {"loss_d", "loss_g", "d_real", "d_fake"} <= set(fit.history[-1])


def test_gan_bad_input():
    with pytest.raises(ValueError, match="generator must return"):
        GAN(3, latent_dim=2, generator=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="loss must be one of"):
        pg.fit(GAN(2), torch.randn(10, 2), steps=1, loss="wasserstein")
    assert pg.compatible(GAN(2)) == ["adversarial"]


# ---- energy-based models ---------------------------------------------------------------

class Quadratic(torch.nn.Module):
    """E(x) = ½ (x − μ)ᵀ Λ (x − μ): p is N(μ, Λ⁻¹)."""

    def __init__(self, mu, prec):
        super().__init__()
        self.mu, self.prec = mu, prec

    def forward(self, x):
        d = x - self.mu
        return 0.5 * ((d @ self.prec) * d).sum(-1)


@pytest.mark.parametrize("metropolis", [True, False])
def test_langevin_samples_a_quadratic_energy(metropolis):
    mu, cov = torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 0.5], [0.5, 0.8]])
    m = EnergyModel(2, energy_net=Quadratic(mu, torch.linalg.inv(cov)), sample_steps=600, step_size=0.2,
                    metropolis=metropolis)
    s = m.sample({}, 4000, seed=0)
    # 4000 independent chains: the mean's standard error ≈ 0.016; the unadjusted chain has an
    # O(ε²) = O(0.04) bias in the covariance, which the 0.1 tolerance covers
    torch.testing.assert_close(s.mean(0), mu, atol=0.08, rtol=0)
    torch.testing.assert_close(torch.cov(s.T), cov, atol=0.1, rtol=0)


def test_ebm_learns_two_moons_better_than_noise():
    x = pg.load_dataset("two-moons").float()
    fit = pg.fit(EnergyModel(2, hidden=(64, 64), sample_steps=100), x[:1500], steps=600, seed=0,
                 progress=False)
    s = fit.sample(500, seed=0)
    noise = torch.randn(500, 2) * x.std(0) + x.mean(0)
    assert mmd2(s, x[1500:]) < mmd2(noise, x[1500:])
    assert torch.isfinite(fit.log_prob(x[1500:])).all()


def test_mmd_is_small_for_same_distribution():
    g = torch.Generator().manual_seed(0)
    a, b, c = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g) + 1
    assert abs(mmd2(a, b)) < 0.01 < mmd2(a, c)


def ring(n, g, modes=8, radius=2.0, sd=0.05):
    k = torch.randint(modes, (n,), generator=g)
    angle = 2 * math.pi * k / modes
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return centres + sd * torch.randn(n, 2, generator=g), radius * torch.stack(
        [torch.cos(2 * math.pi * torch.arange(modes) / modes), torch.sin(2 * math.pi * torch.arange(modes) / modes)], -1)


def test_gan_non_saturating_covers_the_8_modes_of_a_ring():
    g = torch.Generator().manual_seed(0)
    x, centres = ring(8000, g)
    fit = pg.fit(GAN(2, latent_dim=2, hidden=(64, 64)), x, steps=3000, seed=0, lr=1e-3,
                 gradient_penalty=0.1, progress=False)
    s = fit.sample(4000, seed=0)
    nearest = torch.cdist(s, centres).min(1)
    counts = torch.bincount(nearest.indices[nearest.values < 0.5], minlength=8)
    # every mode holds at least a fifth of its fair share, 2.5% of the samples (uniform
    # coverage gives 12.5%; a dropped mode gives 0, a starved one the ~1.5% seen without the
    # penalty), and most samples lie on a mode
    assert (counts >= 0.025 * len(s)).all(), counts
    assert counts.sum() >= 0.7 * len(s), counts
