"""VBFit: the result type of the full-Bayesian variational fits (``fit_vb``, ``fit_svi_bayes``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..core.params import GMMParams
from ..core.priors import NormalWishartPrior
from ..core.validation import ArrayLike
from ..core.vb_posterior import VBPosterior, sample_posterior

if TYPE_CHECKING:
    import numpy as np

    from .arviz_io import InferenceData

__all__ = ["VBFit"]


@dataclass(frozen=True, eq=False)
class VBFit:
    """Result of ``fit_vb`` (method "vb") or ``fit_svi_bayes`` (method "svi_bayes").

    posterior   VBPosterior q(α) q(μ, Λ)
    gamma       (N, K) q(Z) of the training data (PRML 10.49)
    elbo        (T,) the full bound (10.70–10.77) per iteration/step; for "vb" non-decreasing,
                entry t after iteration t's M-step, the last after the closing E-step
    method      "vb" or "svi_bayes"
    n_iter, converged, seed, prior, times (seconds per trace entry), info (free-form)
    """

    posterior: VBPosterior
    gamma: torch.Tensor
    elbo: torch.Tensor
    method: str = "vb"
    n_iter: int = 0
    converged: bool = False
    seed: int | None = None
    prior: NormalWishartPrior | None = None
    times: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.posterior.k

    @property
    def d(self) -> int:
        return self.posterior.d

    @property
    def weights(self) -> torch.Tensor:
        """E[π_k] under q(α)."""
        return self.posterior.expected_weights()

    def n_effective(self, threshold: float = 1e-2) -> int:
        """Components with E[π_k] > threshold (the ones not switched off, PRML fig. 10.6)."""
        return int((self.weights > threshold).sum())

    def mean_params(self, cov: str = "inverse_expected_precision") -> GMMParams:
        return self.posterior.mean_params(cov)

    def predictive_log_density(self, x: ArrayLike) -> torch.Tensor:
        """ln p(x̂ | X) per row, the Student-t mixture of PRML 10.81."""
        return self.posterior.predictive_log_density(x)

    def score_samples(self, x: ArrayLike) -> torch.Tensor:
        """ln p(x̂ | X) per row (N,) under the posterior predictive (PRML 10.81)."""
        return self.posterior.predictive_log_density(x)

    def score(self, x: ArrayLike) -> float:
        return float(self.score_samples(x).mean())

    def predict_proba(self, x: ArrayLike) -> torch.Tensor:
        """q(z = k) for new rows: the VB E-step, PRML 10.46–10.49 (as scikit-learn's predict_proba)."""
        return self.posterior.responsibilities(x)

    def predict(self, x: ArrayLike) -> torch.Tensor:
        return torch.argmax(self.posterior.log_rho(x), dim=1)

    def sample_posterior(self, num_samples: int = 1000, seed: int | None = None) -> dict[str, np.ndarray]:
        return sample_posterior(self.posterior, num_samples, seed)

    def to_arviz(self, num_samples: int = 1000, seed: int | None = None) -> InferenceData:
        """``num_samples`` draws from q as an ``InferenceData`` (dims ``component``, ``feature``)."""
        from .arviz_io import vb_to_inference_data

        return vb_to_inference_data(self, num_samples, seed)

    def __repr__(self) -> str:
        last = float(self.elbo[-1]) if self.elbo.numel() else float("nan")
        return (
            f"VBFit(method={self.method!r}, K={self.k}, D={self.d}, n_iter={self.n_iter}, "
            f"converged={self.converged}, elbo={last:.6f}, n_effective={self.n_effective()}, seed={self.seed})"
        )
