"""VBFit: the result type of the full-Bayesian variational fits (``fit_vb``, ``fit_svi_bayes``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..core.evaluate import label_from, map_rows, row_total
from ..core.params import GMMParams
from ..core.priors import NormalWishartPrior
from ..core.sources import Source, as_source
from ..core.validation import ArrayLike
from ..core.vb_posterior import VBPosterior, sample_posterior

if TYPE_CHECKING:
    import numpy as np

    from .arviz_io import InferenceData

__all__ = ["VBFit"]


@dataclass(frozen=True, eq=False)
class VBFit:
    """Result of ``fit_vb`` (method "vb") or ``fit_svi_bayes`` (method "svi_bayes").

    posterior   VBPosterior q(α) q(μ, Λ) (its ``covariance_type`` and ``weight_prior``: the sticks of the
                Dirichlet-process prior when ``stick_b`` is set)
    gamma       (N, K) q(Z) of the training data (PRML 10.49); None when the data were not in memory
                (a ``.npy`` file or memmap, an h5py/zarr dataset, a Dask array: an (N, K) array is what
                out-of-core fits avoid) — :meth:`responsibilities` recomputes it, lazily for Dask
    elbo        (T,) the full bound (10.70–10.77) per iteration/step; for "vb" non-decreasing,
                entry t after iteration t's M-step, the last after the closing E-step
    method      "vb" or "svi_bayes"
    n_iter, converged, seed, prior, times (seconds per trace entry), info (free-form)
    """

    posterior: VBPosterior
    gamma: torch.Tensor | None
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
        """E[π_k] under q(α), or from the Dirichlet-process sticks (renormalised over the K components)."""
        return self.posterior.expected_weights()

    def n_effective(self, threshold: float = 1e-2) -> int:
        """Components with E[π_k] > threshold (the ones not switched off, PRML fig. 10.6)."""
        return int((self.weights > threshold).sum())

    def mean_params(self, cov: str = "inverse_expected_precision") -> GMMParams:
        return self.posterior.mean_params(cov)

    def predictive_log_density(self, x: ArrayLike) -> torch.Tensor:
        """ln p(x̂ | X) per row, the Student-t mixture of PRML 10.81."""
        return self.posterior.predictive_log_density(x)

    def _source(self, x: ArrayLike | Source, sample_weight: ArrayLike | None = None) -> Source:
        """Any data source (``core.sources.as_source``) in q's dtype; D must match."""
        src = as_source(x, sample_weight, dtype=None if isinstance(x, Source) else self.posterior.dtype)
        if src.d != self.d:
            raise ValueError(f"x has D = {src.d} columns but the posterior is {self.d}-dimensional")
        return src

    def score_samples(self, x: ArrayLike | Source) -> Any:
        """ln p(x̂ | X) per row (N,) under the posterior predictive (PRML 10.81); any data source
        (``core.evaluate.map_rows``: a lazy Dask array for Dask input)."""
        return map_rows(self._source(x), self.posterior.predictive_log_density)

    def score(self, x: ArrayLike | Source, sample_weight: ArrayLike | None = None) -> float:
        """Mean of :meth:`score_samples`, Σ_i w_i ln p(x_i | X) / Σ_i w_i with frequency weights."""
        total, n = row_total(self._source(x, sample_weight), self.posterior.predictive_log_density)
        return total / n

    def predict_proba(self, x: ArrayLike | Source) -> Any:
        """q(z = k) for new rows: the VB E-step, PRML 10.46–10.49 (as scikit-learn's predict_proba);
        a lazy Dask array for Dask input."""
        return map_rows(self._source(x), self.posterior.responsibilities, self.k)

    def responsibilities(self, x: ArrayLike | Source) -> Any:
        """r (N, K), PRML 10.49, recomputed for ``x`` (e.g. the training data of a fit that kept no
        ``gamma``); a lazy Dask array for Dask input."""
        return self.predict_proba(x)

    def predict(self, x: ArrayLike | Source) -> Any:
        """argmax_k ln ρ_ik (PRML 10.46) per row (LongTensor (N,); an int64 Dask array for Dask)."""
        return map_rows(self._source(x), label_from(self.posterior.log_rho), integer=True)

    def sample_posterior(self, num_samples: int = 1000, seed: int | None = None) -> dict[str, np.ndarray]:
        return sample_posterior(self.posterior, num_samples, seed)

    def sample(self, n: int, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n independent draws (x (n, D), z (n,) LongTensor) from the posterior predictive p(x̂ | X).

        Each row has its own Θ_i ~ q(α) q(μ, Λ) (:meth:`sample_posterior`, so it follows q's weight
        prior and covariance type), then z_i ~ Cat(α_i) and x_i ~ N(μ_{z_i}, Σ_{z_i})
        (``core.params.draw_mixture``, eq. 15): each x_i follows the Student-t mixture of PRML
        10.81 exactly (with a Dirichlet prior) and the rows are independent (one Θ for all rows
        would give draws that are exchangeable but correlated). z_i labels the component drawn.
        Θ and (x, z) come from two child seeds of ``seed``; rows are drawn in fixed blocks (at most
        ~2^20 numbers of Σ draws each), so memory stays bounded and the same seed gives the same bits.
        """
        from ..core.params import draw_mixture
        from ..core.rng import resolve_seed, spawn_seeds, torch_generator
        from ..core.validation import check_int

        n = check_int(n, "n", 0)
        theta_seed, x_seed = spawn_seeds(resolve_seed(seed), 2)
        gen = torch_generator(x_seed)
        block = max(1, (1 << 20) // (self.k * self.d * self.d))
        starts = range(0, n, block)
        xs, zs = [torch.empty(0, self.d, dtype=self.posterior.dtype)], [torch.empty(0, dtype=torch.long)]
        for start, s in zip(starts, spawn_seeds(theta_seed, len(starts))):
            m = min(block, n - start)
            theta = self.sample_posterior(m, s)  # Θ_i ~ q, one per row
            chol = torch.linalg.cholesky(torch.from_numpy(theta["cov"]))
            x, z = draw_mixture(torch.from_numpy(theta["alpha"]), torch.from_numpy(theta["mu"]), chol, m, gen)
            xs.append(x.to(self.posterior.dtype))
            zs.append(z)
        return torch.cat(xs), torch.cat(zs)

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
