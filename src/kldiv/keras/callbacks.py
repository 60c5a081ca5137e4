"""KL annealing for Keras: a callback that sets the β of :class:`kldiv.keras.GaussianKL` layers from a schedule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .. import _validate
from ._common import keras
from .layers import GaussianKL

__all__ = ["KLAnnealing"]


def _gaussian_kl_layers(layer: Any) -> list[GaussianKL]:
    found, stack, seen = [], [layer], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, GaussianKL):
            found.append(current)
        stack.extend(getattr(current, "layers", None) or [])
        stack.extend(getattr(current, "_layers", None) or [])
    return found


class KLAnnealing(keras.callbacks.Callback):
    """Sets β = ``schedule(step)`` on GaussianKL layers before every training batch (step 0, 1, 2, ... across
    epochs and across ``fit`` calls), and logs the value as ``beta`` at each epoch's end.

    Args:
      schedule: any callable from the step (an int) to β, such as :class:`kldiv.vae.LinearWarmup` (Bowman et al.
        2016), :class:`kldiv.vae.CyclicalSchedule` (Fu et al. 2019) or :class:`kldiv.vae.ConstantSchedule`.
      layers: the GaussianKL layers to drive; None finds every one in the model being trained.
      initial_step: the step of the first batch (to resume a schedule).
    """

    def __init__(self, schedule: Callable[[int], float], layers: Sequence[GaussianKL] | None = None,
                 initial_step: int = 0) -> None:
        super().__init__()
        self.schedule = _validate.check_schedule(schedule)
        self.layers = None if layers is None else list(layers)
        self.step = _validate.check_integer_at_least("initial_step", initial_step, 0)
        self.beta: float | None = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        model = self.model  # on JAX, reading it syncs the training state, so the assignment below takes effect
        targets = self.layers if self.layers is not None else _gaussian_kl_layers(model)
        if not targets:
            raise ValueError(_validate.no_gaussian_kl_layer())
        self.beta = _validate.check_nonnegative("beta", self.schedule(self.step), " (the schedule's value)")
        for layer in targets:
            layer.beta.assign(self.beta)
        self.step += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None and self.beta is not None:
            logs["beta"] = self.beta
