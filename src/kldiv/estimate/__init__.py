"""kldiv.estimate: KL divergence estimated from samples or from log-densities at samples.

Every estimator returns an :class:`Estimate` ``(value, stderr, ci, n)`` of KL(P ‖ Q), first argument P, in nats
unless ``base`` is given:

* :func:`knn` — k-nearest-neighbour estimator for continuous samples (fixed or adaptive k);
* :func:`plugin` — plug-in estimator for category counts, with Miller–Madow or pseudo-count correction;
* :func:`mc` — Monte Carlo estimators k1, k2, k3 from log p and log q at samples of P.
"""

from __future__ import annotations

from ._estimate import Estimate, normal_interval
from ._knn import knn
from ._mc import mc
from ._plugin import plugin

__all__ = ["Estimate", "knn", "plugin", "mc", "normal_interval"]
