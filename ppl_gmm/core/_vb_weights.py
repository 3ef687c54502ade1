"""The weight priors of the variational posterior (``core.vb_posterior``): q(α) for the finite
Dirichlet and for the truncated Dirichlet process (Blei & Jordan 2006), their expectations and log
normalisers; the models are in the section "Weight priors" of ``core.vb_posterior``.
"""

from __future__ import annotations

import torch

from ._distributions import log_dirichlet_norm

__all__ = [
    "WEIGHT_PRIORS",
    "check_weight_prior",
    "expected_log_weights",
    "stick_update",
    "stick_expectations",
    "log_weight_norm",
]


WEIGHT_PRIORS = ("dirichlet", "dirichlet_process")


def check_weight_prior(weight_prior: str) -> str:
    """``weight_prior`` is one of :data:`WEIGHT_PRIORS` (module docstring)."""
    if not isinstance(weight_prior, str) or weight_prior not in WEIGHT_PRIORS:
        raise ValueError(f"unknown weight_prior {weight_prior!r}; use one of {', '.join(WEIGHT_PRIORS)}")
    return weight_prior


def _exclusive_cumsum(v: torch.Tensor) -> torch.Tensor:
    """[0, v_0, v_0 + v_1, ...]: Σ_{j<k} v_j."""
    return torch.cat([v.new_zeros(1), torch.cumsum(v, 0)[:-1]])


def _in_stick_order(order: torch.Tensor | None, k: int) -> torch.Tensor:
    return torch.arange(k) if order is None else order


def stick_expectations(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[ln v], E[ln(1 − v)]) under Beta(a, b): ψ(a) − ψ(a + b) and ψ(b) − ψ(a + b)."""
    psi_a, psi_b, psi_ab = torch.digamma(torch.stack([a, b, a + b]))
    return psi_a - psi_ab, psi_b - psi_ab


def expected_log_weights(
    alpha: torch.Tensor, stick_b: torch.Tensor | None = None, stick_order: torch.Tensor | None = None
) -> torch.Tensor:
    """E[ln π_k]: Dirichlet ψ(alpha_k) − ψ(Σ_j alpha_j) (PRML 10.66); with sticks q(v_k) = Beta(a_k, b_k)
    (a = ``alpha``, b = ``stick_b``): ψ(a_k) − ψ(a_k + b_k) + Σ_{j<k} [ψ(b_j) − ψ(a_j + b_j)]
    (Blei & Jordan 2006), j < k in ``stick_order``."""
    if stick_b is None:
        return torch.digamma(alpha) - torch.digamma(alpha.sum())  # 10.66
    order = _in_stick_order(stick_order, alpha.shape[0])
    e_log_v, e_log_1mv = stick_expectations(alpha[order], stick_b[order])
    out = torch.empty_like(e_log_v)
    out[order] = e_log_v + _exclusive_cumsum(e_log_1mv)
    return out


def stick_update(n_k: torch.Tensor, alpha0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """q(v_k) = Beta(a_k, b_k): a_k = 1 + N_k, b_k = alpha0 + Σ_{j>k} N_j (Blei & Jordan 2006, eq. 18–19)."""
    tail = torch.flip(_exclusive_cumsum(torch.flip(n_k, (0,))), (0,))  # Σ_{j>k} N_j
    return 1.0 + n_k, alpha0 + tail


def log_weight_norm(alpha: torch.Tensor, stick_b: torch.Tensor | None = None) -> torch.Tensor:
    """The log normaliser of q(weights): ln C(alpha) (Dirichlet, PRML B.23) or −Σ_k ln B(a_k, b_k)
    (sticks, Beta normalisers 1 / B(a, b)); with (alpha0 1_K) or (1, alpha0) that of the prior."""
    if stick_b is None:
        return log_dirichlet_norm(alpha)  # B.23
    return (torch.lgamma(alpha + stick_b) - torch.lgamma(alpha) - torch.lgamma(stick_b)).sum()
