"""Pyro's loss and gradients at a given (Θ, γ), for the figure (and notebook) that hold Pyro's
``TraceEnum_ELBO`` against eq. 18 and eq. 19.

These evaluate the Pyro program of ``ppl.model`` at arbitrary, non-optimal points; the closed
forms they are compared with are ``core.gmm.elbo`` and ``core.gmm.elbo_gradients``.
"""

from __future__ import annotations

import pyro
import torch

from ..core.params import GMMParams
from ..core.validation import ArrayLike, as_data
from ..ppl.model import gmm_model, meanfield_guide

__all__ = ["pyro_elbo_and_grads", "tangent"]


def pyro_elbo_and_grads(
    x: ArrayLike, gamma: ArrayLike, params: GMMParams
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(−loss, gradients) of Pyro's ``TraceEnum_ELBO`` on ``gmm_model`` / ``meanfield_guide`` at the
    given Θ and γ (not necessarily an optimum): −loss is eq. 18, and the gradients, by autograd
    with respect to the *constrained* values α (K,), μ (K, D), Σ (K, D, D) and γ (N, K), are
    to be compared with eq. 19 (``elbo_gradients``).

    Pyro's ``Categorical`` normalises α and each row of γ, so its gradients in those two differ
    from eq. 19's (taken "before the simplex constraint") by a constant per row,
    −Σ_k γ_ik ∂L/∂γ_ik (for α: −Σ_k α_k ∂L/∂α_k = −N).  Compare them after :func:`tangent`
    (subtracting the row mean), which removes exactly that constant — the direction along
    which the simplex constraint acts.
    """
    from pyro import poutine
    from pyro.infer import TraceEnum_ELBO

    x = as_data(x)
    k = params.k
    leaves = {
        name: t.detach().to(x.dtype).clone().requires_grad_(True)
        for name, t in (
            ("alpha", params.alpha),
            ("mu", params.mu),
            ("cov", params.cov),
            ("gamma", torch.as_tensor(gamma)),
        )
    }
    model_values = {"alpha": leaves["alpha"], "mu": leaves["mu"], "scale_tril": torch.linalg.cholesky(leaves["cov"])}
    with pyro.get_param_store().scope():  # leave the caller's param store untouched
        loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
            poutine.substitute(gmm_model, model_values),
            poutine.substitute(meanfield_guide, {"gamma": leaves["gamma"]}),
            x,
            k,
        )
    grads = torch.autograd.grad(-loss, list(leaves.values()))
    return (-loss).detach(), {name: g.detach() for name, g in zip(leaves, grads)}


def tangent(g: torch.Tensor) -> torch.Tensor:
    """g minus its mean over the last axis: the part of a gradient tangent to the simplex."""
    return g - g.mean(-1, keepdim=True)
