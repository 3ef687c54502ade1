"""Every ArviZ call of the package lives here (ArviZ 0.2x ``InferenceData``), so a
move to ArviZ 1.x is one file's work."""
from __future__ import annotations

import numpy as np

__all__ = ["fit_to_inference_data"]


def _coords(k: int, d: int) -> dict:
    return {"component": np.arange(k), "feature": np.arange(d), "feature_": np.arange(d)}


def fit_to_inference_data(fit):
    """A point-estimate fit as a one-chain, one-draw posterior (alpha, mu, cov)."""
    import arviz as az

    p = fit.params
    posterior = {
        "alpha": p.alpha.numpy()[None, None],
        "mu": p.mu.numpy()[None, None],
        "cov": p.cov.numpy()[None, None],
    }
    dims = {"alpha": ["component"], "mu": ["component", "feature"], "cov": ["component", "feature", "feature_"]}
    return az.from_dict(
        posterior=posterior,
        coords=_coords(p.k, p.d),
        dims=dims,
        attrs={"method": fit.method, "point_estimate": 1, "elbo": float(fit.elbo[-1])},
    )
