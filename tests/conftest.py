import os

# The Triton kernels are tested on CPU tensors through Triton's interpreter, which triton.jit picks when it
# decorates a kernel (and Triton reads its settings once imported): set it before any test module can import
# triton (transformers, accelerate and torch.compile may). CPU tests are unaffected: kernel="auto" runs Triton
# on CUDA tensors only.
os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
