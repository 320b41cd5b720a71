"""Built-in declarations. Models state what they are; they never import engines."""
from probgen.models.flow import Flow  # noqa: F401
from probgen.models.diffusion import Diffusion  # noqa: F401
from probgen.models.gan import GAN  # noqa: F401
from probgen.models.energy_model import EnergyModel  # noqa: F401
from probgen.models.autoencoder import Autoencoder  # noqa: F401
from probgen.models.vae import VAE  # noqa: F401
from probgen.models.bayesian_network import BayesianNetwork  # noqa: F401
from probgen.models.categorical_mixture import CategoricalMixture  # noqa: F401
from probgen.models.aode import AODE  # noqa: F401
from probgen.models.generative_classifier import GenerativeClassifier, NaiveBayes  # noqa: F401
from probgen.models.pcfg import PCFG, Tree  # noqa: F401
from probgen.models.hmm import HMM  # noqa: F401
from probgen.models.factor_graph import FactorGraph  # noqa: F401
from probgen.models.lda import LDA  # noqa: F401
from probgen.models.mixture import GaussianMixture  # noqa: F401
from probgen.models.boltzmann import RBM, DBM, DBN, BoltzmannMachine  # noqa: F401
