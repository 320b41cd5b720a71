"""The capabilities the inference methods ask of a declaration, as ``typing.Protocol``s.

Every method's ``accepts(model)`` (``inference/``) is a check against one of these: a
declaration is accepted for what it offers (structural typing, PEP 544), not for the class
it comes from, so a declaration of your own that offers, say, the three EM hooks is fitted
by the EM driver like the built-in Gaussian mixture. All protocols are
``runtime_checkable``; `implements` checks that each member is there (by ``getattr``, as
``isinstance`` did before Python 3.12) and that each method is callable (``isinstance``
only checks that the names exist).
Where a method also needs an attribute *value* (``emission in (...)``, ``bayesian is
True``), that condition sits beside the protocol check in its ``accepts``; where several
methods share such a condition, it is a predicate here (`is_hidden_markov_chain`).

Data members are annotated, methods written with their signatures and shapes; see each
built-in declaration (``probgen.models``) for an implementation.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import torch

__all__ = ["implements", "PyroProgram", "Priors", "UserFunction", "AmortisedProgram", "TopicModel",
           "HiddenMarkovChain", "is_hidden_markov_chain", "EMHooks", "Responsibilities",
           "BayesianMixture", "BayesianHiddenMarkovChain", "CategoricalMixtureModel", "NetworkWithTables",
           "FactorGraphModel",
           "Grammar", "LayeredEnergyModel", "Invertible", "Denoising", "Adversarial",
           "AdversarialNetworks", "ContinuousEnergy", "CountingClassifier", "BayesRuleClassifier"]


@functools.lru_cache(maxsize=None)
def _members(protocol: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(data members, methods)`` a protocol declares, with its bases'."""
    data, methods = [], []
    for cls in protocol.__mro__:
        if cls in (Protocol, object) or not getattr(cls, "_is_protocol", False):
            continue
        data += [n for n in getattr(cls, "__annotations__", {}) if not n.startswith("_")]
        methods += [n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")]
    return tuple(dict.fromkeys(data)), tuple(dict.fromkeys(methods))


def implements(model: Any, protocol: type) -> bool:
    """Whether ``model`` offers ``protocol``: every member present and every method callable.

    Members are looked up with ``getattr``, not by ``isinstance``: from Python 3.12 on,
    ``isinstance`` against a runtime-checkable protocol looks attributes up statically
    (``inspect.getattr_static``), which misses what ``__getattr__`` provides, such as a
    ``torch.nn.Module``'s submodules (a GAN's ``net.generator``)."""
    data, methods = _members(protocol)
    return all(hasattr(model, n) for n in data + methods) and all(callable(getattr(model, n)) for n in methods)


# ---- Pyro programs ------------------------------------------------------------------------

@runtime_checkable
class PyroProgram(Protocol):
    """A declaration given as a Pyro program (generic SVI, NUTS, generic EM): the program,
    the arguments it takes for some data, and the declaration hooks. A program with
    ``generic_inference = False`` asks the generic engines to leave it to its own methods."""

    def program(self, *args: Any) -> Any: ...
    def program_args(self, data: Any) -> tuple: ...
    def check_data(self, data: Any) -> Any: ...
    def init_params(self, data: Any, seed: int | None = None) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class Priors(Protocol):
    """Prior distributions for a program's ``pyro.param`` sites, ``priors(*data?) ->
    {site: distribution}``, which turns them into latent sites NUTS can sample."""

    def priors(self, *args: Any) -> dict: ...


@runtime_checkable
class UserFunction(PyroProgram, Protocol):
    """A user's Pyro function wrapped as a declaration (``fn``; `probgen.declarations.UserProgram`)."""

    fn: Callable


@runtime_checkable
class AmortisedProgram(PyroProgram, Protocol):
    """A Pyro program with an amortised guide (amortised SVI: VAE, variational autoencoders):
    ``encode(params, x)`` gives the code distribution's parameters, ``reconstruct`` decodes,
    ``encoder_dist`` names the guide's family."""

    encoder_dist: Any

    def guide(self, *args: Any) -> Any: ...
    def encode(self, params: dict, x: torch.Tensor) -> Any: ...
    def reconstruct(self, params: dict, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class TopicModel(PyroProgram, Protocol):
    """A Pyro program declaring ``k`` topics over a ``vocab_size``-word vocabulary with
    Dirichlet hyperparameters ``alpha_vector`` ``(K,)`` and ``eta_tensor`` (scalar), over a
    `probgen.corpus.Corpus` (LDA: CAVI, online SVI, collapsed Gibbs)."""

    k: int
    vocab_size: int
    alpha_vector: torch.Tensor
    eta_tensor: torch.Tensor


# ---- chains, mixtures -----------------------------------------------------------------------

@runtime_checkable
class HiddenMarkovChain(Protocol):
    """A Markov chain of discrete states with per-step emissions (forward-backward, Viterbi,
    Baum-Welch): parameters named ``param_names`` (``"initial"`` ``(K,)`` and
    ``"transition"`` ``(K, K)`` among them, see `is_hidden_markov_chain`) and
    ``log_emission(params, data) -> (B, T, K)`` on data with ``.x`` and ``.lengths``
    (optionally ``emission_table(params, data)``, a ``probgen.ops.chain.EmissionTable``
    the chain kernels read faster)."""

    param_names: Sequence[str]

    def log_emission(self, params: dict, data: Any) -> torch.Tensor: ...
    def init_params(self, data: Any, seed: int | None = None) -> dict[str, torch.Tensor]: ...


def is_hidden_markov_chain(model: Any) -> bool:
    """`HiddenMarkovChain` with ``initial`` and ``transition`` parameters."""
    return implements(model, HiddenMarkovChain) and {"initial", "transition"} <= set(model.param_names)


@runtime_checkable
class EMHooks(Protocol):
    """The three hooks of the EM driver (Dempster, Laird & Rubin 1977): ``init_params``,
    ``e_step(params, x) -> (statistics, log-likelihood)``, ``m_step(statistics) -> params``
    (a declaration with ``bayesian = True`` is the variational engine's instead)."""

    def init_params(self, data: Any, seed: int | None = None) -> dict[str, torch.Tensor]: ...
    def e_step(self, params: dict, x: Any) -> Any: ...
    def m_step(self, stats: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class Responsibilities(Protocol):
    """A mixture whose posterior over components is exact: ``responsibilities(params, x)
    -> (N, K)`` (the exact engine's mixture queries)."""

    def responsibilities(self, params: dict, x: Any) -> torch.Tensor: ...
    def init_params(self, data: Any, seed: int | None = None) -> dict[str, torch.Tensor]: ...
    def check_params(self, params: dict) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class BayesianMixture(Protocol):
    """A Gaussian mixture with conjugate priors named as scikit-learn's
    ``BayesianGaussianMixture`` (``None``: its default) — coordinate-ascent VI (Bishop
    2006, §10.2) needs ``bayesian is True`` and ``covariance == "full"`` beside this."""

    k: int
    dim: int
    weight_concentration_prior: Any
    mean_prior: Any
    mean_precision_prior: Any
    degrees_of_freedom_prior: Any
    covariance_prior: Any

    def check_data(self, data: Any) -> torch.Tensor: ...


@runtime_checkable
class BayesianHiddenMarkovChain(Protocol):
    """A hidden Markov chain (`is_hidden_markov_chain`) with conjugate priors, for
    variational Bayes (Beal 2003): ``bayesian`` true, ``emission`` ``"categorical"`` |
    ``"gaussian"`` (with ``dim``, ``covariance``), ``prior_hyperparameters(data)`` -> the
    Dirichlet / Normal–Wishart hyperparameters as full-shape tensors (``HMM``'s docstring)."""

    k: int
    emission: str
    bayesian: bool

    def prior_hyperparameters(self, data: Any = None) -> dict: ...


@runtime_checkable
class CategoricalMixtureModel(Protocol):
    """A mixture of products of categoricals: ``n_components``, Dirichlet ``pseudo_count``,
    ``component_log_prob(params, x) -> (N, K)``."""

    n_components: int
    pseudo_count: float

    def component_log_prob(self, params: dict, x: torch.Tensor) -> torch.Tensor: ...


# ---- graphical models, grammars ---------------------------------------------------------------

@runtime_checkable
class NetworkWithTables(Protocol):
    """A discrete Bayesian network with conditional probability tables: ``variables`` in
    topological order, ``parents[v]``, ``states[v]``, ``cards``, ``index[v]`` (the column),
    ``table_shape(v) = (*cards of parents, card of v)``; tables named ``probs_<v>``."""

    variables: Sequence[str]
    parents: Mapping[str, Sequence[str]]
    states: Mapping[str, Sequence[str]]
    cards: Sequence[int]
    index: Mapping[str, int]

    def check_params(self, params: dict | None) -> dict[str, torch.Tensor]: ...
    def check_data(self, data: Any) -> torch.Tensor: ...
    def table_shape(self, v: str) -> tuple[int, ...]: ...


@runtime_checkable
class FactorGraphModel(Protocol):
    """Discrete variables ``{name: cardinality}`` and log-potential tables over ``scopes``
    (``{factor: tuple of variables}``); ``log_partition(params, evidence)``."""

    variables: Mapping[str, int]
    scopes: Mapping[str, tuple]
    log_potentials: Mapping[str, torch.Tensor]

    def log_partition(self, params: Mapping | None = None, evidence: Mapping | None = None) -> torch.Tensor: ...


@runtime_checkable
class Grammar(Protocol):
    """A probabilistic grammar with the chart algorithms (inside-outside EM, Viterbi):
    ``rules``, ``expected_counts(params, sentences) -> (counts (R,), log_lik (N,))``,
    ``m_step(counts)``, ``treebank_counts(trees)``, ``viterbi``, ``posteriors``."""

    rules: Sequence[Any]

    def expected_counts(self, params: dict | None, sentences: list, per_sentence: bool = False) -> tuple: ...
    def m_step(self, counts: torch.Tensor, previous: torch.Tensor | None = None) -> dict[str, torch.Tensor]: ...
    def treebank_counts(self, trees: list) -> torch.Tensor: ...
    def viterbi(self, params: dict | None, sentences: list) -> list: ...
    def posteriors(self, params: dict | None, sentences: list) -> dict: ...
    def log_prob(self, params: dict | None, data: Any) -> torch.Tensor: ...
    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]: ...


# ---- energies, neural generative models --------------------------------------------------------

@runtime_checkable
class LayeredEnergyModel(Protocol):
    """A layered energy model (`probgen.energy.LayeredEnergy`: Boltzmann machines,
    RBM, DBN, DBM): ``layers``, the ``n_directed`` lowest links directed, and the energy
    machinery written once over the layer tensors (energy, Gibbs sweeps, mean field, exact
    enumeration)."""

    layers: Sequence[Any]
    n_directed: int
    n_layers: int

    def energy(self, params: dict, states: list) -> torch.Tensor: ...
    def gibbs_sweep(self, params: dict, states: list, *args: Any, **kwargs: Any) -> list: ...
    def mean_field(self, params: dict, states: list, free: list, **kwargs: Any) -> list: ...
    def log_partition_exact(self, params: dict, max_bits: int = 22) -> torch.Tensor: ...
    def check_params(self, params: dict) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class Invertible(Protocol):
    """A normalizing flow: ``invertible`` (true for a flow) and ``distribution(params)``,
    a distribution with exact ``log_prob`` (maximum likelihood)."""

    invertible: bool

    def distribution(self, params: dict | None = None) -> Any: ...


@runtime_checkable
class Denoising(Protocol):
    """A diffusion model (DDPM; Ho et al. 2020): the forward noising ``q_sample(x0, t,
    noise)``, the reverse step ``p_sample``, the denoiser ``net``."""

    net: Any

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor: ...
    def p_sample(self, *args: Any, **kwargs: Any) -> torch.Tensor: ...


@runtime_checkable
class AdversarialNetworks(Protocol):
    """A generator and a discriminator network (Goodfellow et al. 2014)."""

    generator: Any
    discriminator: Any


@runtime_checkable
class Adversarial(Protocol):
    """A GAN declaration: its ``net`` is `AdversarialNetworks` (checked beside)."""

    net: Any


@runtime_checkable
class ContinuousEnergy(Protocol):
    """An energy-based model over continuous data (``continuous_energy`` true) with a
    Langevin sampler ``langevin(x, steps, step_size, g, ...)`` (contrastive divergence)."""

    continuous_energy: bool

    def langevin(self, x: torch.Tensor, steps: int, step_size: float, g: Any, *args: Any, **kwargs: Any) -> Any: ...


# ---- classifiers --------------------------------------------------------------------------------

@runtime_checkable
class CountingClassifier(Protocol):
    """A classifier fitted by counting (AODE, naive Bayes): ``count(data)`` and
    ``class_log_posterior(params, x) -> (N, C)``."""

    def count(self, data: Any, *args: Any, **kwargs: Any) -> Any: ...
    def class_log_posterior(self, params: dict, x: Any) -> torch.Tensor: ...


@runtime_checkable
class BayesRuleClassifier(Protocol):
    """A generative classifier by Bayes' rule: one fit of ``class_conditional`` (a
    declaration some method of the engine accepts, checked beside) per class."""

    class_conditional: Any

    def class_log_posterior(self, params: dict, x: Any) -> torch.Tensor: ...
