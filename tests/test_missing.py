"""Missing values (NaN cells) and partial labels in the EM methods of the Gaussian mixture,
the HMM and the categorical mixture, against oracles: scipy's Gaussian densities and a
row-by-row reference E-step written with the textbook conditional-Gaussian formulas,
brute-force enumeration of HMM state paths, and the supervised closed-form estimates.

Tolerances: 1e-9 for float64 computations that differ only in the order of operations
(row-by-row numpy against batched torch: rounding ~1e-14 relative, amplified at most by
the conditioning of the small covariance matrices used here); "never decreases" allows
1e-12 relative (rounding of the per-example mean); recovery bounds are 4 standard errors
of the estimator from the number of observed cells."""
import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

import probgen as pg
from probgen.models import HMM, CategoricalMixture, GaussianMixture
from probgen.ops.gaussian_missing import covariance_matrices

TRUE = {"weights": torch.tensor([0.4, 0.6], dtype=torch.float64),
        "loc": torch.tensor([[-3.0, 0.0, 1.0], [3.0, 1.0, -1.0]], dtype=torch.float64),
        "scale_tril": torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [0.2, -0.3, 0.9]],
                                    [[0.7, 0.0, 0.0], [-0.2, 1.0, 0.0], [0.4, 0.3, 0.6]]], dtype=torch.float64)}
FACTORS = {"full": TRUE["scale_tril"],
           "diag": torch.tensor([[1.0, 0.5, 2.0], [0.7, 1.2, 0.9]], dtype=torch.float64),
           "spherical": torch.tensor([1.0, 0.6], dtype=torch.float64)}


def truth(covariance):
    model = GaussianMixture(2, 3, covariance=covariance)
    return model, {"weights": TRUE["weights"], "loc": TRUE["loc"], model.factor_name: FACTORS[covariance]}


def with_gaps(x, rate, seed):
    """``x`` with each cell missing with probability ``rate`` (MCAR), no row entirely missing."""
    g = torch.Generator().manual_seed(seed)
    miss = torch.rand(x.shape, generator=g) < rate
    miss[miss.all(1), 0] = False
    return x.masked_fill(miss, float("nan"))


def reference_em_step(w, mu, S, x, reg_covar, covariance):
    """One EM step row by row (numpy / scipy): the observed cells' marginal densities, the
    conditional means and covariances of the missing ones, and the M-step on the expected
    statistics (Ghahramani & Jordan 1994)."""
    n, d = x.shape
    k = len(w)
    log_joint = np.empty((n, k))
    for i, row in enumerate(x):
        o = ~np.isnan(row)
        for j in range(k):
            log_joint[i, j] = np.log(w[j]) + stats.multivariate_normal(mu[j][o], S[j][np.ix_(o, o)]).logpdf(row[o])
    log_p = np.logaddexp.reduce(log_joint, axis=1)
    resp = np.exp(log_joint - log_p[:, None])
    s0, s1, s2 = np.zeros(k), np.zeros((k, d)), np.zeros((k, d, d))
    cond_mean = np.zeros((n, d))
    for i, row in enumerate(x):
        o, m = ~np.isnan(row), np.isnan(row)
        for j in range(k):
            xh, c = row.copy(), np.zeros((d, d))
            if m.any():
                gain = S[j][np.ix_(m, o)] @ np.linalg.inv(S[j][np.ix_(o, o)])
                xh[m] = mu[j][m] + gain @ (row[o] - mu[j][o])
                c[np.ix_(m, m)] = S[j][np.ix_(m, m)] - gain @ S[j][np.ix_(o, m)]
            s0[j] += resp[i, j]
            s1[j] += resp[i, j] * xh
            s2[j] += resp[i, j] * (np.outer(xh, xh) + c)
            cond_mean[i] += resp[i, j] * xh
    loc = s1 / s0[:, None]
    cov = s2 / s0[:, None, None] - loc[:, :, None] * loc[:, None, :]
    var = np.diagonal(cov, axis1=1, axis2=2) + reg_covar
    factor = {"full": np.linalg.cholesky(cov + reg_covar * np.eye(d)), "diag": np.sqrt(var),
              "spherical": np.sqrt(var.mean(1))}[covariance]
    return log_p, resp, cond_mean, {"weights": s0 / n, "loc": loc, "factor": factor}


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_gmm_em_step_equals_scipy_reference(covariance):
    model, params = truth(covariance)
    x = with_gaps(model.sample(params, 60, seed=3), 0.3, seed=4)
    S = covariance_matrices(params[model.factor_name], covariance, 3).numpy()
    log_p, resp, cond_mean, new = reference_em_step(params["weights"].numpy(), params["loc"].numpy(), S,
                                                    x.numpy(), 1e-6, covariance)
    ln, r = model.e_step(params, x)
    np.testing.assert_allclose(ln.numpy(), log_p, rtol=0, atol=1e-9)
    np.testing.assert_allclose(r.numpy(), resp, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.log_prob(params, x).numpy(), log_p, rtol=0, atol=1e-9)
    imputed = model.impute(params, x)
    np.testing.assert_allclose(imputed.numpy(), np.where(np.isnan(x.numpy()), cond_mean, x.numpy()), rtol=0, atol=1e-9)
    ln2, step = model.em_step(params, x, reg_covar=1e-6)
    np.testing.assert_allclose(ln2.numpy(), log_p, rtol=0, atol=1e-9)
    np.testing.assert_allclose(step["weights"].numpy(), new["weights"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(step["loc"].numpy(), new["loc"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(step[model.factor_name].numpy(), new["factor"], rtol=0, atol=1e-9)
    # the unfused M-step (responsibilities given) is the same step
    unfused = model.m_step(x, r, reg_covar=1e-6, params=params)
    for name in step:
        np.testing.assert_allclose(unfused[name].numpy(), step[name].numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_gmm_missing_log_likelihood_never_decreases(covariance):
    model, params = truth(covariance)
    x = with_gaps(model.sample(params, 300, seed=1), 0.3, seed=2)
    fit = pg.fit(model, x, seed=0, steps=40, tol=None, progress=False)
    ll = np.array([h["log_likelihood"] for h in fit.history])
    assert len(ll) == 40 and np.isfinite(ll).all()
    assert (np.diff(ll) >= -1e-12 * np.abs(ll[1:])).all()
    # the objective is the exact marginal likelihood of the observed cells
    assert fit.log_prob(x).mean().item() >= ll[-1] - 1e-12 * abs(ll[-1])


def test_gmm_30_percent_missing_within_sampling_error_of_complete_fit():
    model, params = truth("full")
    n = 4000
    x = model.sample(params, n, seed=10)
    gaps = with_gaps(x, 0.3, seed=11)
    full = pg.fit(model, x, seed=0, progress=False)
    part = pg.fit(model, gaps, seed=0, progress=False)
    order = [int(i) for i in torch.cdist(full.params["loc"], part.params["loc"]).argmin(1)]
    nk = full.params["weights"] * n
    cov = full.params["scale_tril"] @ full.params["scale_tril"].transpose(-1, -2)
    var = torch.diagonal(cov, dim1=-2, dim2=-1)                                          # (K, D)
    # the estimators share the observed cells; their difference has at most the missing-data
    # estimator's variance: σ² / (0.7 N_k) for a mean (70% of cells observed), and for a
    # covariance entry (σ_i² σ_j² + σ_ij²) / (0.49 N_k) (both cells observed in 49% of rows)
    se_loc = (var / (0.7 * nk[:, None])).sqrt()
    assert ((part.params["loc"][order] - full.params["loc"]).abs() <= 4 * se_loc).all()
    pcov = part.params["scale_tril"] @ part.params["scale_tril"].transpose(-1, -2)
    se_cov = ((var[:, :, None] * var[:, None, :] + cov.square()) / (0.49 * nk[:, None, None])).sqrt()
    assert ((pcov[order] - cov).abs() <= 4 * se_cov).all()
    se_w = (full.params["weights"] * (1 - full.params["weights"]) / n).sqrt()
    assert ((part.params["weights"][order] - full.params["weights"]).abs() <= 4 * se_w).all()


def test_gmm_impute_query_and_data_checks():
    model, params = truth("full")
    x = model.sample(params, 200, seed=5)
    gaps = with_gaps(x, 0.2, seed=6)
    fit = pg.fit(model, gaps, seed=0, progress=False)
    filled = pg.infer(fit, gaps, query="impute")
    miss = torch.isnan(gaps)
    assert not torch.isnan(filled).any() and torch.equal(filled[~miss], gaps[~miss])
    # correlated dimensions: the conditional means beat the column means on the hidden cells
    col = torch.nanmean(gaps, 0).expand_as(x)
    assert (filled - x)[miss].square().mean() < 0.5 * (col - x)[miss].square().mean()
    assert torch.allclose(pg.infer(fit, gaps, query="log_prob"), fit.log_prob(gaps))
    bad = gaps.clone()
    bad[7] = float("nan")
    with pytest.raises(ValueError, match="row 7 is entirely missing"):
        pg.fit(model, bad, progress=False)
    bad = gaps.clone()
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        pg.fit(model, bad, progress=False)
    with pytest.raises(ValueError, match="missing cells"):
        pg.fit(model, gaps, engine="svi", steps=2, progress=False)


# ---- partial labels ---------------------------------------------------------------------

@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_gmm_with_every_label_em_equals_supervised_closed_form(covariance):
    model, params = truth(covariance)
    x, z = model.sample(params, 300, seed=7, return_assignments=True)
    fit = pg.fit(model, x, labels=z, steps=1, tol=None, seed=0, progress=False, reg_covar=0.0)
    xn, zn = x.numpy(), z.numpy()
    for k in range(2):
        xs = xn[zn == k]
        np.testing.assert_allclose(fit.params["weights"][k].item(), len(xs) / len(xn), atol=1e-12)
        np.testing.assert_allclose(fit.params["loc"][k].numpy(), xs.mean(0), atol=1e-12)
        c = np.cov(xs.T, bias=True)
        want = {"full": np.linalg.cholesky(c), "diag": np.sqrt(np.diag(c)),
                "spherical": np.sqrt(np.diag(c).mean())}[covariance]
        np.testing.assert_allclose(fit.params[model.factor_name][k].numpy(), want, atol=1e-10)


def test_gmm_partial_labels_objective_is_joint_likelihood():
    model, params = truth("full")
    x, z = model.sample(params, 200, seed=8, return_assignments=True)
    labels = torch.where(torch.arange(200) % 3 == 0, z, -1)
    gaps = with_gaps(x, 0.2, seed=9)
    fit = pg.fit(model, gaps, labels=labels, steps=30, tol=None, seed=0, progress=False)
    ll = np.array([h["log_likelihood"] for h in fit.history])
    assert (np.diff(ll) >= -1e-12 * np.abs(ll[1:])).all()
    # the reported objective at the parameters of the last E-step: labelled rows count
    # log π_z p(x_o | z), the others log p(x_o)
    w = fit.history[-1]
    last = pg.fit(model, gaps, labels=labels, steps=29, tol=None, seed=0, progress=False).params
    lp = model.weighted_log_prob(last, gaps)
    known = labels >= 0
    want = torch.where(known, lp.gather(1, labels.clamp(min=0)[:, None])[:, 0], torch.logsumexp(lp, 1))
    assert abs(w["log_likelihood"] - want.mean().item()) < 1e-10
    with pytest.raises(ValueError, match="labels"):
        pg.fit(model, x, labels=torch.full((200,), 2), progress=False)
    with pytest.raises(ValueError, match="shape"):
        pg.fit(model, x, labels=z[:10], progress=False)


# ---- HMM --------------------------------------------------------------------------------

HMM_PARAMS = {"initial": torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
              "transition": torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], dtype=torch.float64)}
EMISSION_PARAMS = {
    "categorical": {"probs": torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]], dtype=torch.float64)},
    "poisson": {"rate": torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)},
    "diag": {"loc": TRUE["loc"].repeat(2, 1)[:3], "scale": FACTORS["diag"].repeat(2, 1)[:3]},
    "full": {"loc": TRUE["loc"].repeat(2, 1)[:3], "scale_tril": TRUE["scale_tril"].repeat(2, 1, 1)[:3]},
}


def hmm_of(kind):
    if kind == "categorical":
        return HMM(3, "categorical", n_symbols=3)
    if kind == "poisson":
        return HMM(3, "poisson")
    return HMM(3, "gaussian", dim=3, covariance=kind)


def emission_logpdf(model, params, k, obs):
    """log p(observed part of one step | state k) by scipy; 0 for a missing step."""
    if model.emission == "categorical":
        return 0.0 if obs < 0 else math.log(params["probs"][k, int(obs)])
    if model.emission == "poisson":
        return 0.0 if math.isnan(obs) else stats.poisson(params["rate"][k].item()).logpmf(obs)
    o = ~np.isnan(obs)
    if not o.any():
        return 0.0
    S = covariance_matrices(params["scale_tril" if model.covariance == "full" else "scale"],
                            model.covariance, 3)[k].numpy()
    return stats.multivariate_normal(params["loc"][k].numpy()[o], S[np.ix_(o, o)]).logpdf(obs[o])


def brute_force(model, params, seq, labels=None):
    """log p(x_obs[, labels]), the state marginals and the expected transition counts by
    enumerating all K^T paths (missing emissions skipped; paths against a label dropped)."""
    T, K = len(seq), 3
    pi, A = params["initial"].numpy(), params["transition"].numpy()
    e = np.array([[emission_logpdf(model, params, k, seq[t]) for k in range(K)] for t in range(T)])
    paths, logs = [], []
    for z in itertools.product(range(K), repeat=T):
        if labels is not None and any(l >= 0 and l != s for l, s in zip(labels, z)):
            continue
        lp = math.log(pi[z[0]]) + sum(math.log(A[z[t - 1], z[t]]) for t in range(1, T)) + sum(e[t, z[t]] for t in range(T))
        paths.append(z)
        logs.append(lp)
    logs = np.array(logs)
    total = np.logaddexp.reduce(logs)
    w = np.exp(logs - total)
    gamma, xi = np.zeros((T, K)), np.zeros((K, K))
    for z, p in zip(paths, w):
        for t in range(T):
            gamma[t, z[t]] += p
            if t:
                xi[z[t - 1], z[t]] += p
    return total, gamma, xi


def gappy_sequences(model, params, seed):
    x = model.sample(params, 2, seed=seed, T=5).to(torch.float64)
    if model.emission == "gaussian":
        x[0, 1] = float("nan")              # a whole missing step
        x[0, 3, 0] = float("nan")           # one missing dimension
        x[1, 0, 1:] = float("nan")          # two missing dimensions
        x[1, 4, 2] = float("nan")
    else:
        x[0, 1] = float("nan")
        x[1, 0] = float("nan")
        x[1, 3] = float("nan")
    return [x[0], x[1, :4]]                 # different lengths: padding and gaps together


@pytest.mark.parametrize("kind", ["categorical", "poisson", "diag", "full"])
def test_hmm_forward_backward_with_missing_steps_equals_brute_force(kind):
    from probgen.inference.em.hmm import e_step
    model = hmm_of(kind)
    params = {**HMM_PARAMS, **EMISSION_PARAMS[kind]}
    seqs = gappy_sequences(model, params, seed=1)
    data = model.check_data(seqs)
    assert data.any_missing
    log_lik, gamma, xi = e_step(model, params, data)
    xi_ref = np.zeros((3, 3))
    for b, s in enumerate(seqs):
        s = s.numpy() if kind != "categorical" else np.where(np.isnan(s.numpy()), -1, s.numpy())
        total, g, x = brute_force(model, params, s)
        xi_ref += x
        assert abs(log_lik[b].item() - total) < 1e-9
        np.testing.assert_allclose(gamma[b, :len(s)].numpy(), g, rtol=0, atol=1e-9)
    np.testing.assert_allclose(xi.numpy(), xi_ref, rtol=0, atol=1e-9)
    fit = pg.fit(model, seqs, engine="exact", init=params, progress=False)
    np.testing.assert_allclose(fit.log_prob(seqs).numpy(), log_lik.numpy(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["categorical", "poisson", "diag", "full"])
def test_hmm_baum_welch_with_missing_never_decreases_and_imputes(kind):
    model = hmm_of(kind)
    params = {**HMM_PARAMS, **EMISSION_PARAMS[kind]}
    x = model.sample(params, 20, seed=3, T=40).to(torch.float64)
    g = torch.Generator().manual_seed(4)
    miss = torch.rand(x.shape, generator=g) < 0.3
    gaps = x.masked_fill(miss, float("nan"))
    fit = pg.fit(model, gaps, seed=0, steps=30, tol=None, progress=False)
    ll = np.array([h["log_likelihood"] for h in fit.history])
    assert np.isfinite(ll).all() and (np.diff(ll) >= -1e-12 * np.abs(ll[1:])).all()
    filled = pg.infer(fit, gaps, query="impute")
    assert filled.shape == x.shape and not torch.isnan(filled.to(torch.float64)).any()
    assert torch.equal(filled.to(torch.float64)[~miss], x[~miss])


@pytest.mark.parametrize("kind", ["categorical", "poisson", "diag", "full"])
def test_hmm_minibatch_statistics_with_gaps_are_the_batch_e_steps(kind):
    """Online / data-parallel Baum-Welch's statistics of a chunk with gaps: written out by hand
    from the (brute-force-checked) posteriors and, per missing Gaussian step, the conditional
    moments E[x_m | x_o, k] = μ_m + Σ_mo Σ_oo⁻¹ (x_o − μ_o), Cov = Σ_mm − Σ_mo Σ_oo⁻¹ Σ_om;
    their M-step equals the batch M-step on the same chunk (float round-off, 1e-10)."""
    from probgen.inference.em.hmm import e_step, m_step, m_step_statistics, statistics
    model = hmm_of(kind)
    params = {**HMM_PARAMS, **EMISSION_PARAMS[kind]}
    seqs = gappy_sequences(model, params, seed=7)
    data = model.check_data(seqs)
    log_lik, gamma, xi = e_step(model, params, data)
    center = params["loc"].mean(0) if kind in ("diag", "full") else None
    got = statistics(model, data, log_lik, gamma, xi, params=params, center=center)
    K = 3
    want = {"initial": gamma[:, 0].sum(0).numpy(), "transition": xi.numpy(),
            "nk": sum(gamma[b, :len(s)].sum(0) for b, s in enumerate(seqs)).numpy(),
            "log_lik": float(model.log_prob(params, seqs).sum())}
    if kind == "categorical":
        want["counts"] = np.zeros((K, 3))
    elif kind == "poisson":
        want["first"], want["observed"] = np.zeros(K), np.zeros(K)
    else:
        want["first"], want["second"] = np.zeros((K, 3)), np.zeros((K, 3, 3))
        cov = covariance_matrices(params["scale_tril"] if kind == "full" else params["scale"], kind, 3).numpy()
        mu, c = params["loc"].numpy(), center.numpy()
    for b, s in enumerate(seqs):
        for t, x in enumerate(s.numpy()):
            for k in range(K):
                w = float(gamma[b, t, k])
                if kind == "categorical":
                    if not np.isnan(x):
                        want["counts"][k, int(x)] += w
                elif kind == "poisson":
                    if not np.isnan(x):
                        want["first"][k] += w * x
                        want["observed"][k] += w
                else:
                    o, m = ~np.isnan(x), np.isnan(x)
                    xh, C = x.copy(), np.zeros((3, 3))
                    gain = cov[k][np.ix_(m, o)] @ np.linalg.inv(cov[k][np.ix_(o, o)])
                    xh[m] = mu[k, m] + gain @ (x[o] - mu[k, o])
                    C[np.ix_(m, m)] = cov[k][np.ix_(m, m)] - gain @ cov[k][np.ix_(o, m)]
                    want["first"][k] += w * (xh - c)
                    want["second"][k] += w * (np.outer(xh - c, xh - c) + C)
    if kind == "diag":
        want["second"] = np.diagonal(want["second"], axis1=1, axis2=2)
    assert set(got) == set(want) | {"n"} and float(got["n"]) == len(seqs)
    for name, value in want.items():
        np.testing.assert_allclose(np.asarray(got[name]), value, rtol=1e-10, atol=1e-10, err_msg=name)
    batch = m_step(model, data, gamma, xi, 1e-6, params)
    mine = m_step_statistics(model, got, 1e-6, center)
    assert set(batch) == set(mine)
    for name in batch:
        np.testing.assert_allclose(mine[name].numpy(), batch[name].numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_hmm_impute_by_hand_and_entirely_missing_sequence():
    model = hmm_of("diag")
    params = {**HMM_PARAMS, **EMISSION_PARAMS["diag"]}
    seqs = gappy_sequences(model, params, seed=2)
    fit = pg.fit(model, seqs, engine="exact", init=params, progress=False)
    gamma = pg.infer(fit, seqs, query="marginals")
    filled = pg.infer(fit, seqs, query="impute")
    # diagonal covariances: a missing dimension's conditional mean is Σ_k γ_tk μ_kd
    want = gamma[0, 1] @ params["loc"]
    assert torch.allclose(filled[0, 1], want, atol=1e-12)
    assert torch.allclose(filled[1, 0, 1:], (gamma[1, 0] @ params["loc"])[1:], atol=1e-12)
    with pytest.raises(ValueError, match="sequence 1 is entirely missing"):
        pg.fit(model, [seqs[0], torch.full((3, 3), float("nan"))], progress=False)
    with pytest.raises(ValueError, match="missing cells"):
        pg.fit(model, seqs, engine="svi", steps=1, progress=False)


@pytest.mark.parametrize("kind", ["categorical", "full"])
def test_hmm_labels_clamp_equals_brute_force(kind):
    """Partial state labels (with missing observations too): the clamped forward–backward
    equals enumeration over the paths that agree with the labels."""
    from probgen.inference.em.hmm import e_step
    model = hmm_of(kind)
    params = {**HMM_PARAMS, **EMISSION_PARAMS[kind]}
    seqs = gappy_sequences(model, params, seed=5)
    labels = [torch.tensor([-1, 2, -1, -1, 0]), torch.tensor([1, -1, -1, -1])]
    data = model.check_data(seqs)
    log_lik, gamma, xi = e_step(model, params, data, model.check_labels(labels, data))
    xi_ref = np.zeros((3, 3))
    for b, s in enumerate(seqs):
        s = s.numpy() if kind != "categorical" else np.where(np.isnan(s.numpy()), -1, s.numpy())
        total, g, x = brute_force(model, params, s, labels[b].tolist())
        xi_ref += x
        assert abs(log_lik[b].item() - total) < 1e-9
        np.testing.assert_allclose(gamma[b, :len(s)].numpy(), g, rtol=0, atol=1e-9)
    np.testing.assert_allclose(xi.numpy(), xi_ref, rtol=0, atol=1e-9)


def test_hmm_every_label_gives_supervised_estimates():
    model = hmm_of("categorical")
    params = {**HMM_PARAMS, **EMISSION_PARAMS["categorical"]}
    # every state given: one EM step is the supervised closed form (normalised counts)
    x, z = model.sample(params, 30, seed=6, T=20, return_states=True)
    fit = pg.fit(model, x, labels=z, steps=1, tol=None, seed=0, progress=False)
    K = 3
    init = torch.bincount(z[:, 0], minlength=K).double()
    trans = torch.zeros(K, K, dtype=torch.float64).index_put_((z[:, :-1].reshape(-1), z[:, 1:].reshape(-1)),
                                                              torch.ones(30 * 19, dtype=torch.float64), accumulate=True)
    emit = torch.zeros(K, 3, dtype=torch.float64).index_put_((z.reshape(-1), x.reshape(-1)),
                                                             torch.ones(600, dtype=torch.float64), accumulate=True)
    assert torch.allclose(fit.params["initial"], init / init.sum(), atol=1e-12)
    assert torch.allclose(fit.params["transition"], trans / trans.sum(1, keepdim=True), atol=1e-12)
    assert torch.allclose(fit.params["probs"], emit / emit.sum(1, keepdim=True), atol=1e-12)


def test_gaussian_hmm_every_label_gives_supervised_estimates():
    model = hmm_of("full")
    params = {**HMM_PARAMS, **EMISSION_PARAMS["full"]}
    x, z = model.sample(params, 10, seed=7, T=30, return_states=True)
    fit = pg.fit(model, x, labels=z, steps=1, tol=None, seed=0, progress=False, min_covar=0.0)
    xf, zf = x.reshape(-1, 3).numpy(), z.reshape(-1).numpy()
    for k in range(3):
        xs = xf[zf == k]
        np.testing.assert_allclose(fit.params["loc"][k].numpy(), xs.mean(0), atol=1e-10)
        np.testing.assert_allclose(fit.params["scale_tril"][k].numpy(), np.linalg.cholesky(np.cov(xs.T, bias=True)),
                                   atol=1e-10)


# ---- categorical mixture ----------------------------------------------------------------

CAT = {"weights": torch.tensor([0.3, 0.7], dtype=torch.float64),
       "probs": torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0]],
                              [[0.1, 0.3, 0.6], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]], dtype=torch.float64)}


def test_categorical_mixture_missing_features_are_summed_out():
    model = CategoricalMixture(2)
    x = model.sample(CAT, 40, seed=1).to(torch.float64)
    x = with_gaps(x, 0.3, seed=2)
    lp = model.log_prob(CAT, x)
    # by hand: Σ over every completion of the missing cells of p(x) = p(observed cells)
    for i in range(8):
        row = x[i]
        gaps = torch.isnan(row).nonzero().squeeze(1).tolist()
        total = 0.0
        for fill in itertools.product(range(3), repeat=len(gaps)):
            full = row.clone()
            full[gaps] = torch.tensor(fill, dtype=torch.float64)
            total += model.log_prob(CAT, full[None].long()).exp().item()
        assert abs(lp[i].item() - math.log(total)) < 1e-12
    # (maximum likelihood, pseudo_count=0: with a pseudo-count EM climbs the posterior instead)
    fit = pg.fit(CategoricalMixture(2, pseudo_count=0.0), x, seed=0, steps=40, tol=None, progress=False)
    ll = np.array([h["log_likelihood"] for h in fit.history])
    assert (np.diff(ll) >= -1e-12 * np.abs(ll[1:])).all()
    filled = pg.infer(fit, x, query="impute")
    miss = torch.isnan(x)
    assert torch.equal(filled[~miss], x[~miss].long())
    # the most probable value under the posterior over components, by hand for one cell
    i, j = [int(v) for v in miss.nonzero()[0]]
    obs = ~miss[i]
    post = torch.stack([fit.params["weights"][k].log() + fit.params["probs"][k, obs.nonzero().squeeze(1),
                                                                               x[i, obs].long()].log().sum()
                        for k in range(2)]).softmax(0)
    assert filled[i, j] == int((post[:, None] * fit.params["probs"][:, j]).sum(0).argmax())
    with pytest.raises(ValueError, match="entirely missing"):
        pg.fit(model, torch.full((2, 3), float("nan")), progress=False)


def test_categorical_mixture_every_label_gives_supervised_counts():
    model = CategoricalMixture(2, pseudo_count=1.0)
    x = model.sample(CAT, 100, seed=3)
    z = torch.multinomial(CAT["weights"], 100, replacement=True, generator=torch.Generator().manual_seed(3))
    fit = pg.fit(model, x, labels=z, steps=1, tol=None, seed=0, progress=False)
    for k in range(2):
        xs = x[z == k]
        counts = torch.nn.functional.one_hot(xs, 3).double().sum(0) + 1.0
        assert torch.allclose(fit.params["probs"][k], counts / counts.sum(-1, keepdim=True), atol=1e-12)
        assert abs(fit.params["weights"][k].item() - len(xs) / 100) < 1e-10
