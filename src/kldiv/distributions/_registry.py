"""The pair registry: one function per (type of P, type of Q), most specific match by class hierarchy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_REGISTRY: dict[tuple[type, type], Callable[[Any, Any], Any]] = {}


def register(type_p: type, type_q: type) -> Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]]:
    """Decorator registering ``fn(p, q) -> KL(p ‖ q)`` for instances of ``type_p`` and ``type_q`` (or subclasses).

    ``kl`` calls the most specific registered pair: the one whose classes sit lowest in the method resolution
    orders of ``type(p)`` and ``type(q)`` (as ``torch.distributions.kl.register_kl`` does). A registered function
    may raise ``NotImplementedError`` for parameter values it cannot handle; ``kl`` then falls back to Monte
    Carlo when asked to.

        >>> @register(MyNormal, MyNormal)           # doctest: +SKIP
        ... def _kl_mynormal_mynormal(p, q): ...
    """
    if not (isinstance(type_p, type) and isinstance(type_q, type)):
        raise TypeError(f"register expects two classes, got {type_p!r} and {type_q!r}")

    def decorator(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        _REGISTRY[type_p, type_q] = fn
        return fn

    return decorator


def dispatch(type_p: type, type_q: type) -> Callable[[Any, Any], Any] | None:
    """The function of the most specific registered pair matching ``(type_p, type_q)``, or None."""
    mro_p, mro_q = type_p.__mro__, type_q.__mro__
    best, best_rank = None, None
    for (super_p, super_q), fn in _REGISTRY.items():
        if super_p in mro_p and super_q in mro_q:
            i, j = mro_p.index(super_p), mro_q.index(super_q)
            rank = (i + j, i)
            if best_rank is None or rank < best_rank:
                best, best_rank = fn, rank
    return best


def registered_pairs(module_prefix: str = "") -> list[tuple[str, str]]:
    """Registered pairs as ``(name of P's class, name of Q's class)``, sorted, optionally only classes whose
    module starts with ``module_prefix``."""
    return sorted(
        (p.__name__, q.__name__) for p, q in _REGISTRY if p.__module__.startswith(module_prefix)
    )


def describe(type_p: type, type_q: type) -> str:
    """Names of registered pairs involving the module family of ``type_p`` (for error messages)."""
    prefix = type_p.__module__.split(".")[0]
    pairs = [f"{p}-{q}" for p, q in registered_pairs(prefix)]
    return ", ".join(pairs)
