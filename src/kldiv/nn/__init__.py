"""kldiv.nn: PyTorch autograd for the measures (and, later, distillation losses)."""
