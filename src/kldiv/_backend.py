"""Array backends: which namespace an input belongs to, dtype policy, and lazy framework detection.

A framework is only ever touched if the caller already imported it (its arrays are the evidence),
in the way einops detects backends: nothing here imports torch, JAX, TensorFlow or CuPy.

TensorFlow tensors are not array API objects; their namespace here is ``tensorflow.experimental.numpy``,
enough for elementwise formulas (the Gaussian KL of :mod:`kldiv.vae`). The measures run them through the
NumPy engine instead (:mod:`kldiv._bridges.tf`).
"""

from __future__ import annotations

import sys
from numbers import Number
from typing import Any

import array_api_compat
import numpy as np


def is_numpy_namespace(xp: Any) -> bool:
    return xp is np or xp is getattr(array_api_compat, "numpy", None)


def _is_array(x: Any) -> bool:
    return array_api_compat.is_array_api_obj(x)


def is_tf(*arrays: Any) -> bool:
    """True if any of ``arrays`` is a TensorFlow tensor or variable (only if TensorFlow is already imported)."""
    if "tensorflow" not in sys.modules:
        return False
    # the module test first: cheap, and nothing of TensorFlow's runs on other arrays (torch.compile traces this)
    candidates = [a for a in arrays if type(a).__module__.startswith("tensorflow")]
    if not candidates:
        return False
    import tensorflow as tf

    return any(tf.is_tensor(a) for a in candidates)


def is_tf_namespace(xp: Any) -> bool:
    return getattr(xp, "__name__", "") == "tensorflow.experimental.numpy"


def _mixed(arrays: list[Any]) -> TypeError:
    kinds = sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in arrays})
    return TypeError(
        f"inputs come from different array libraries ({', '.join(kinds)}); convert them to one library before calling"
    )


def namespace(*arrays: Any) -> Any:
    """Return the array namespace of the arrays among ``arrays`` (plain NumPy for lists and scalars).

    Lists, tuples, Python numbers and NumPy arrays adopt the namespace of the other array arguments (a
    NumPy array beside a torch tensor becomes a tensor on its device); mixing two other frameworks (torch
    with JAX, say) is a ``TypeError``. TensorFlow tensors give ``tensorflow.experimental.numpy``.
    """
    real = [a for a in arrays if _is_array(a) and not isinstance(a, np.ndarray | np.generic)]
    if is_tf(*arrays):
        if real:
            raise _mixed(real + [a for a in arrays if is_tf(a)])
        import tensorflow.experimental.numpy as tnp

        return tnp
    if not real:
        return np
    try:
        xp = array_api_compat.array_namespace(*real)
    except TypeError as error:
        raise _mixed(real) from error
    return np if is_numpy_namespace(xp) else xp


def _to_tf(x: Any, name: str, like: Any) -> Any:
    """``x`` as a floating TensorFlow tensor: Python numbers and lists take ``like``'s float dtype, NumPy arrays
    keep theirs, integers and bools become float32 (TensorFlow's default float)."""
    import tensorflow as tf

    if not tf.is_tensor(x):
        if not isinstance(x, list | tuple | Number | np.ndarray | np.generic):
            raise TypeError(f"{name} is a {type(x).__name__}; pass an array of numbers")
        floating = like is not None and like.dtype.is_floating
        try:
            x = tf.convert_to_tensor(x, dtype=like.dtype if floating and not isinstance(x, np.ndarray) else None)
        except (ValueError, TypeError) as error:
            raise TypeError(f"{name} could not be read as an array of numbers ({error})") from error
    elif isinstance(x, tf.Variable):
        x = tf.convert_to_tensor(x)
    if x.dtype.is_floating:
        return x
    if x.dtype.is_integer or x.dtype == tf.bool:
        return tf.cast(x, tf.float32)
    raise TypeError(f"{name} has dtype {x.dtype.name}, not a real number type; pass real numbers")


def check_not_masked(x: Any, name: str) -> None:
    """Refuse a NumPy masked array with masked entries: reading it as an array would take the values stored
    under the mask, silently."""
    if isinstance(x, np.ma.MaskedArray) and np.ma.is_masked(x):
        raise TypeError(
            f"{name} is a masked array with masked entries, which would be read as the values stored under the "
            f"mask; fill them ({name}.filled(0) for probabilities) or select the entries to use first"
        )


def to_array(x: Any, name: str, xp: Any, like: Any = None) -> Any:
    """Convert ``x`` to a floating-point array of namespace ``xp``; non-numeric input is a ``TypeError``."""
    check_not_masked(x, name)
    if is_tf_namespace(xp):
        return _to_tf(x, name, like)
    if xp is np:
        if _is_array(x) and not isinstance(x, np.ndarray | np.generic):
            raise TypeError(f"{name} is a {type(x).__name__} but the other input is a NumPy array; use one library")
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as error:
            raise TypeError(f"{name} could not be read as an array of numbers ({error}); pass a rectangular array") from error
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"{name} has dtype {arr.dtype}, not a real number type; pass numbers (int or float), not "
                f"{'strings' if arr.dtype.kind in 'US' else 'complex numbers' if arr.dtype.kind == 'c' else 'objects'}"
            )
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float64)
        return arr
    if not _is_array(x) or isinstance(x, np.ndarray | np.generic):  # NumPy beside a tensor joins its backend
        if not isinstance(x, list | tuple | Number | np.ndarray | np.generic):
            raise TypeError(f"{name} is a {type(x).__name__}; pass an array of numbers")
        device = array_api_compat.device(like) if like is not None else None
        try:
            x = xp.asarray(x, device=device)
        except (ValueError, TypeError, RuntimeError) as error:
            raise TypeError(f"{name} could not be read as an array of numbers ({error})") from error
    if not xp.isdtype(x.dtype, "real floating"):
        if xp.isdtype(x.dtype, ("integral", "bool")) or x.dtype == getattr(xp, "bool", None):
            x = xp.astype(x, _default_float(xp, x))
        else:
            raise TypeError(f"{name} has dtype {x.dtype}, not a real number type; pass real numbers")
    return x


def _default_float(xp: Any, x: Any) -> Any:
    if array_api_compat.is_torch_array(x):
        import torch  # already imported: x is a tensor

        return torch.get_default_dtype()
    return xp.float32 if not hasattr(xp, "float64") else xp.float64


def compute_dtype(xp: Any, dtype: Any) -> Any:
    """Half precision (float16, bfloat16) computes in float32; float32 and float64 compute as they are."""
    if dtype in (xp.float32, xp.float64):
        return dtype
    return xp.float32


def result_dtype(xp: Any, *dtypes: Any) -> Any:
    return xp.result_type(*dtypes) if len(dtypes) > 1 else dtypes[0]


def is_tracing(x: Any) -> bool:
    """True where values cannot be inspected: inside ``jax.jit``, ``torch.compile``/``torch.jit`` tracing,
    ``tf.function`` graphs, torch tensors under ``torch.func`` transforms (vmap), and torch tensors on the
    ``meta`` device (Keras's shape inference uses them)."""
    if "tensorflow" in sys.modules and is_tf(x):
        import tensorflow as tf

        return tf.is_symbolic_tensor(x)
    if "jax" in sys.modules:
        import jax

        if isinstance(x, jax.core.Tracer):
            return True
    if "torch" in sys.modules and array_api_compat.is_torch_array(x):
        import torch

        if torch.compiler.is_compiling() or torch.jit.is_tracing() or x.device.type == "meta":
            return True
        if torch._C._functorch.is_functorch_wrapped_tensor(x):  # batched by torch.func.vmap
            return True
        try:
            from torch._subclasses.fake_tensor import FakeTensor
        except ImportError:  # pragma: no cover - very old torch
            return False
        return isinstance(x, FakeTensor)
    return False


def torch_func_kind(*arrays: Any) -> str | None:
    """How ``torch.func`` transforms hold the torch tensors among ``arrays``: "grad" when one is inside a
    gradient transform (grad, vjp, jacrev, jacfwd, hessian, jvp) or batched by vmap over a tensor that requires
    grad, "vmap" when they are only batched, None when no transform holds them."""
    torch = sys.modules.get("torch")
    if torch is None or torch._C._functorch.peek_interpreter_stack() is None:  # no transform is running
        return None
    _functorch = torch._C._functorch
    kind = None
    for a in arrays:
        if not (isinstance(a, torch.Tensor) and _functorch.is_functorch_wrapped_tensor(a)):
            continue
        kind = "vmap"
        while _functorch.is_functorch_wrapped_tensor(a):
            if _functorch.is_gradtrackingtensor(a):
                return "grad"
            a = _functorch.get_unwrapped(a)
        if a.requires_grad and torch.is_grad_enabled():
            return "grad"
    return kind


def has_values(x: Any) -> bool:
    """False where an array's values cannot be read: tracers (:func:`is_tracing`) and PyTorch meta tensors,
    which carry a shape and a dtype only. Value checks are skipped for them and results keep their kind."""
    if is_tracing(x):
        return False
    device = getattr(x, "device", None)
    return getattr(device, "type", None) != "meta"


def is_torch(x: Any) -> bool:
    return array_api_compat.is_torch_array(x)


def is_jax(*arrays: Any) -> bool:
    return "jax" in sys.modules and any(array_api_compat.is_jax_array(a) for a in arrays)


def needs_torch_autograd(*arrays: Any) -> bool:
    """True if any input is a torch tensor that requires grad while grad mode is on."""
    if "torch" not in sys.modules:
        return False
    import torch

    return torch.is_grad_enabled() and any(is_torch(a) and a.requires_grad for a in arrays)
