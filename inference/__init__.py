"""Inference engines. Each engine is a package of methods (one algorithm for one kind of
declaration); importing a method module registers it (see ``probgen.registry``)."""
from probgen.inference import adversarial, bp, diffusion, em, exact, flow, mcmc, meanfield, svi  # noqa: F401
