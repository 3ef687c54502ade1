"""GMMFit: the one result type of the point-estimate fits (CAVI/EM, SVI, MAP).

Traces are per iteration (per step for SVI).  For CAVI/EM, entry t holds the
state after iteration t's M-step, L(γ_{t−1}, Θ_t), and the last entry holds the
state after the closing E-step, L(γ, Θ) = log p(X | Θ).  ``log_likelihood`` is
eq. 26 at the same Θ, so ``kl_gap = log_likelihood − elbo`` is
KL(q ‖ p(Z | X, Θ)) ≥ 0 of the free-energy decomposition (second note) and is 0
after every E-step.

Prediction takes any data source (``core.sources.as_source``: arrays, a ``.npy`` path or memmap, an
h5py/zarr dataset, a Dask array) and is evaluated block by block (``core.evaluate``); for Dask input
``predict``, ``predict_proba``, ``score_samples`` and ``responsibilities`` return lazy Dask arrays.
``gamma`` is ``None`` for fits that did not materialise the N×K responsibilities (out-of-core and
Dask fits): ``fit.responsibilities(x)`` recomputes them (eq. 20), lazily for Dask.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core.errors import FitFileError
from ..core.evaluate import gmm_log_weights, label_from, lse_from, map_rows, proba_from, row_total
from ..core.params import GMMParams
from ..core.sources import Source, as_source
from ..core.validation import ArrayLike
from .fit_file import FORMAT, check_fit, read_fit_file

if TYPE_CHECKING:
    import os

    from .arviz_io import InferenceData

__all__ = ["GMMFit", "load_fit", "n_parameters"]


def n_parameters(k: int, d: int, covariance_type: str = "full") -> int:
    """Free parameters, counted as scikit-learn does (weights K − 1, means K·D, covariances)."""
    cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "tied": d * (d + 1) // 2, "spherical": k}[covariance_type]
    return (k - 1) + k * d + cov


@dataclass(frozen=True, eq=False)
class GMMFit:
    """Result of ``fit_cavi``, ``fit_svi`` or ``fit_map``.

    params          GMMParams Θ at the end of the fit (in the data's units)
    gamma           (N, K) responsibilities of the training data, or None when they were not
                    materialised (out-of-core / Dask fits; ``responsibilities(x)`` recomputes them)
    elbo            (T,) eq. 18 after each iteration/step; ``elbo[-1]`` is eq. 18 at (params, gamma)
    log_likelihood  (T,) eq. 26 at the same Θ as ``elbo``
    method          "cavi", "svi" or "map"
    n_iter          iterations (CAVI/MAP) or gradient steps (SVI) performed
    converged       whether the stopping rule was met
    seed            the seed every random choice of the fit flowed from
    times           (T,) seconds since the start of the fit at each trace entry
    """

    params: GMMParams
    gamma: torch.Tensor | None
    elbo: torch.Tensor
    log_likelihood: torch.Tensor
    method: str
    n_iter: int
    converged: bool
    seed: int | None
    covariance_type: str = "full"
    reg_covar: float = 0.0
    times: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    # --- derived -------------------------------------------------------------------------------
    @property
    def kl_gap(self) -> torch.Tensor:
        """KL(q ‖ p(Z | X, Θ)) = log p(X | Θ) − ELBO per trace entry (second note, eq. 3).

        For MAP fits ``elbo`` also holds ln p(Θ) (``info["log_prior"]``), which is taken out."""
        elbo = self.elbo
        if "log_prior" in self.info:
            elbo = elbo - torch.as_tensor(self.info["log_prior"], dtype=elbo.dtype)
        return self.log_likelihood - elbo

    @property
    def k(self) -> int:
        return self.params.k

    def _source(self, x: ArrayLike | Source, sample_weight: ArrayLike | None = None) -> Source:
        """``x`` (and weights) as a validated source in Θ's dtype; D must match."""
        src = as_source(x, sample_weight, dtype=None if isinstance(x, Source) else self.params.dtype)
        if src.d != self.params.d:
            raise ValueError(f"x has D = {src.d} columns but the fit is {self.params.d}-dimensional")
        return src

    # --- prediction ----------------------------------------------------------------------------
    def predict_proba(self, x: ArrayLike | Source) -> Any:
        """Responsibilities γ (N, K) of new data under the fitted Θ (eq. 20); a lazy Dask array for
        Dask input."""
        src = self._source(x)
        return map_rows(src, proba_from(gmm_log_weights(self.params)), self.params.k)  # eq. 20

    def responsibilities(self, x: ArrayLike | Source) -> Any:
        """γ = e_step(x, Θ) (N, K), eq. 20 — for the training data, the ``gamma`` a fit on an
        out-of-core or Dask source does not keep; a lazy Dask array for Dask input."""
        return self.predict_proba(x)

    def predict(self, x: ArrayLike | Source) -> Any:
        """The most responsible component of each row (LongTensor (N,); int64 Dask array for Dask)."""
        return map_rows(self._source(x), label_from(gmm_log_weights(self.params)), integer=True)

    def score_samples(self, x: ArrayLike | Source) -> Any:
        """log p(x_i | Θ) per row (N,), the terms of eq. 26; a lazy Dask array for Dask input."""
        return map_rows(self._source(x), lse_from(gmm_log_weights(self.params)))  # eq. 26 per row

    def _total(self, x: ArrayLike | Source, sample_weight: ArrayLike | None) -> tuple[float, float]:
        """(Σ_i w_i log p(x_i | Θ), Σ_i w_i): eq. 26 with frequency weights (w_i = 1 without)."""
        return row_total(self._source(x, sample_weight), lse_from(gmm_log_weights(self.params)))

    def score(self, x: ArrayLike | Source, sample_weight: ArrayLike | None = None) -> float:
        """Mean log-likelihood per row (scikit-learn's ``score``): Σ_i w_i log p(x_i | Θ) / Σ_i w_i."""
        total, n = self._total(x, sample_weight)
        return total / n

    def sample(self, n: int, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws (x (n, D), z (n,) LongTensor) from the fitted mixture, eq. 15: ``params.sample``
        (``GMMParams.sample``; n an integer >= 0, same seed same bits)."""
        return self.params.sample(n, seed)

    def n_parameters(self) -> int:
        return n_parameters(self.params.k, self.params.d, self.covariance_type)

    def bic(self, x: ArrayLike | Source, sample_weight: ArrayLike | None = None) -> float:
        """−2 log p(X | Θ) + p log N (scikit-learn's parameter count); with frequency weights
        −2 Σ_i w_i log p(x_i | Θ) + p log Σ_i w_i."""
        total, n = self._total(x, sample_weight)
        return -2 * total + self.n_parameters() * math.log(n)

    def aic(self, x: ArrayLike | Source, sample_weight: ArrayLike | None = None) -> float:
        """−2 log p(X | Θ) + 2 p (weighted: −2 Σ_i w_i log p(x_i | Θ) + 2 p)."""
        return -2 * self._total(x, sample_weight)[0] + 2 * self.n_parameters()

    def to_arviz(self) -> InferenceData:
        """The point estimate as a one-draw ``InferenceData`` (see ``ppl_gmm.arviz_io``)."""
        from .arviz_io import fit_to_inference_data

        return fit_to_inference_data(self)

    def summary(self) -> str:
        """A readable table of the fit."""
        from .text import format_fit

        return format_fit(self)

    def __repr__(self) -> str:
        last = float(self.elbo[-1]) if self.elbo.numel() else float("nan")
        return (
            f"GMMFit(method={self.method!r}, K={self.params.k}, D={self.params.d}, n_iter={self.n_iter}, "
            f"converged={self.converged}, elbo={last:.6f}, seed={self.seed})"
        )

    # --- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` (numpy arrays + JSON metadata; no pickled code). ``load_fit`` reads it.

        The fit is first checked against the file schema (``results.fit_file``): a fit that
        ``load_fit`` would refuse (e.g. an unknown ``method``, NaN entries, ``info`` that is not
        JSON) raises ``FitFileError`` and nothing is written."""
        meta = {
            "format": FORMAT,
            "method": self.method,
            "n_iter": int(self.n_iter),
            "converged": bool(self.converged),
            "seed": None if self.seed is None else int(self.seed),
            "covariance_type": self.covariance_type,
            "reg_covar": float(self.reg_covar),
            "info": self.info,
        }
        arrays: dict[str, Any] = {
            "alpha": self.params.alpha.numpy(),
            "mu": self.params.mu.numpy(),
            "cov": self.params.cov.numpy(),
            **({} if self.gamma is None else {"gamma": self.gamma.numpy()}),  # None: γ not materialised
            "elbo": self.elbo.numpy(),
            "log_likelihood": self.log_likelihood.numpy(),
        }
        if self.times is not None:
            arrays["times"] = self.times.numpy()
        try:
            text = json.dumps(meta, sort_keys=True)
        except (TypeError, ValueError) as err:
            raise FitFileError(path, f"info is not JSON-serialisable ({err})", writing=True) from err
        check_fit(arrays, json.loads(text), path, writing=True)  # write only what load_fit reads
        with open(path, "wb") as fh:
            np.savez(fh, meta=np.array(text), **arrays)


def load_fit(path: str | os.PathLike[str]) -> GMMFit:
    """Read what ``GMMFit.save`` wrote; arrays round-trip bit for bit.

    The whole file is checked against the schema of ``results.fit_file`` (members, dtypes, shapes,
    finite values, simplex rows, positive-definite covariances, meta keys and values) before
    anything is built; nothing is unpickled.

    Raises
    ------
    FitFileError
        (a ``ValueError``) naming the file and the problem: missing or unreadable, not a fit archive
        (a ``.npy``, text, or a netCDF VB/NUTS result), truncated, written by a newer ppl_gmm, or
        off the schema.
    """
    arrays, meta = read_fit_file(path)
    a = {name: torch.from_numpy(arr) for name, arr in arrays.items()}
    try:
        return GMMFit(
            params=GMMParams(a["alpha"], a["mu"], a["cov"]),
            gamma=a.get("gamma"),
            elbo=a["elbo"],
            log_likelihood=a["log_likelihood"],
            method=meta["method"],
            n_iter=meta["n_iter"],
            converged=meta["converged"],
            seed=meta["seed"],
            covariance_type=meta["covariance_type"],
            reg_covar=float(meta["reg_covar"]),
            times=a.get("times"),
            info=meta["info"],
        )
    except (TypeError, ValueError) as err:  # the schema should have caught it: still one error class
        raise FitFileError(path, str(err)) from err
