"""Independent numerical oracles shared by test directories."""

from __future__ import annotations

import math


def gaussian_js(distance):
    """JS between N(0, I) and N(distance·u, I) for a unit vector u (it depends only on the distance, in any
    dimension): 1-D quadrature to ~1e-11."""
    from scipy import integrate, stats

    p, q = stats.norm(0, 1).pdf, stats.norm(distance, 1).pdf

    def integrand(z):
        m = (p(z) + q(z)) / 2
        return 0.5 * (p(z) * math.log(p(z) / m) + q(z) * math.log(q(z) / m))

    return integrate.quad(integrand, -30, 30 + distance, epsabs=1e-13, limit=200)[0]
