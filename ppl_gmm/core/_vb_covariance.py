"""The covariance types of the variational posterior (``core.vb_posterior``): the prior each type
reads, and the optimum of q(Λ) over the type's family from the full conjugate update (the section
"Covariance types" of ``core.vb_posterior`` derives them).
"""

from __future__ import annotations

import math

import torch

from ._conjugate import ConjugateStats
from ._distributions import log_dirichlet_norm
from ._normal_wishart import NormalWishartPrior

__all__ = ["vb_prior", "restrict_update", "prior_constant"]


def vb_prior(prior: NormalWishartPrior, covariance_type: str) -> NormalWishartPrior:
    """The prior of ``covariance_type`` as scikit-learn reads ``covariance_prior`` = W0⁻¹: full and
    tied W0⁻¹ itself, diag its diagonal diag((W0⁻¹)_dd), spherical the mean of that diagonal times I."""
    if covariance_type in ("full", "tied"):
        return prior
    w0_inv = prior.W0_inv
    diag = torch.diagonal(w0_inv)
    w0 = torch.diag(1.0 / diag) if covariance_type == "diag" else torch.eye(prior.d, dtype=w0_inv.dtype) / diag.mean()
    return NormalWishartPrior(prior.alpha0, prior.m0, prior.beta0, prior.nu0, w0)


def restrict_update(st: ConjugateStats, covariance_type: str) -> ConjugateStats:
    """The optimum over the type's family from the full conjugate update ``st`` (module docstring):
    W_k⁻¹ → diag(M_k), (tr M_k / D) I, or (1/K) Σ_k M_k with nu = mean_k nu_k = nu0 + N / K."""
    if covariance_type == "full":
        return st
    w_inv, nu = st.w_inv, st.nu
    if covariance_type == "diag":
        w_inv = torch.diag_embed(torch.diagonal(w_inv, dim1=-2, dim2=-1))
    elif covariance_type == "spherical":
        d = w_inv.shape[-1]
        trace = torch.diagonal(w_inv, dim1=-2, dim2=-1).sum(-1)
        w_inv = (trace / d)[:, None, None] * torch.eye(d, dtype=w_inv.dtype)
    else:  # tied
        w_inv = w_inv.mean(0).expand_as(w_inv).clone()
        nu = nu.mean().expand_as(nu).clone()
    return st._replace(w_inv=w_inv, nu=nu)


def prior_constant(prior: NormalWishartPrior, k: int, covariance_type: str, weight_prior: str, dtype: torch.dtype):
    """The prior's normalisers in :func:`bound_after_m_step`: ln C(alpha0 1_K) (or K ln alpha0 for the
    sticks) + K ln B(W0, nu0) + (K D / 2) ln beta0, W0 of the type (:func:`vb_prior`)."""
    const = vb_prior(prior, covariance_type).log_normalisers(k, dtype)
    if weight_prior == "dirichlet_process":
        const = const - log_dirichlet_norm(torch.full((k,), prior.alpha0, dtype=dtype)) + k * math.log(prior.alpha0)
    return const


def _check_structure(w: torch.Tensor, nu: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """W of ``covariance_type`` (module docstring), to relative 1e-10; returned exactly structured."""
    d = w.shape[-1]
    diag = torch.diagonal(w, dim1=-2, dim2=-1)
    tol = 1e-10 * diag.abs().amax(-1)[:, None, None]
    if covariance_type in ("diag", "spherical"):
        if bool(((w - torch.diag_embed(diag)).abs() > tol).any()):
            raise ValueError(f'W must be diagonal for covariance_type="{covariance_type}"')
        if covariance_type == "spherical":
            if bool(((diag - diag.mean(-1, keepdim=True)).abs() > tol[:, :, 0]).any()):
                raise ValueError('W must be a multiple of the identity for covariance_type="spherical"')
            diag = diag.mean(-1, keepdim=True).expand(-1, d)
        return torch.diag_embed(diag)
    if covariance_type == "tied":
        if bool(((w - w[:1]).abs() > tol).any()) or bool((nu != nu[0]).any()):
            raise ValueError('W and nu must be the same for every component for covariance_type="tied"')
        return w[:1].expand_as(w).clone()
    return w
