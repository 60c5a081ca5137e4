"""kldiv.vae: the KL side of variational autoencoders (Gaussian KL terms, weighting, schedules, diagnostics)."""
from ._gaussian import gaussian_kl, gaussian_kl_full  # noqa: E402,F401
from ._training import *  # noqa: E402,F401,F403  (β, capacity, free bits, schedules, diagnostics)
