"""Fused linear distillation (in progress)."""


class FusedLinearDistillationLoss:  # placeholder until the fused kernel lands
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("FusedLinearDistillationLoss is not implemented yet")
