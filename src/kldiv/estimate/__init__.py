"""kldiv.estimate: KL divergence estimated from samples or from log-densities at samples.

Every estimator returns an :class:`Estimate` ``(value, stderr, ci, n)`` of KL(P ‖ Q), first argument P, in nats
unless ``base`` is given:

* :func:`knn` — k-nearest-neighbour estimator for continuous samples (fixed or adaptive k);
* :func:`plugin` — plug-in estimator for category counts, with Miller–Madow or pseudo-count correction
  (:func:`category_counts` turns discrete samples into counts);
* :func:`mc` — Monte Carlo estimators k1, k2, k3 from log p and log q at samples of P;
* :func:`variational` — Donsker–Varadhan and NWJ lower bounds on KL, and the Jensen–Shannon bound a GAN
  discriminator optimises, from samples with a small PyTorch critic (:func:`variational_bound`: the bound for
  a given critic, e.g. a GAN discriminator's JS estimate and loss).
"""

from __future__ import annotations

from ._estimate import DiscreteSampleWarning, Estimate, normal_interval
from ._knn import knn
from ._mc import mc
from ._plugin import category_counts, plugin
from ._variational import variational, variational_bound

__all__ = [
    "Estimate", "DiscreteSampleWarning", "knn", "plugin", "category_counts", "mc", "variational", "variational_bound",
    "normal_interval",
]
