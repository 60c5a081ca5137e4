"""kldiv.vae: the KL side of variational autoencoders (Gaussian KL terms, weighting, schedules, diagnostics)."""
