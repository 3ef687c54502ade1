"""Exceptions (and warnings) with messages that say what went wrong and what to do."""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "DegenerateComponentError",
    "DegeneratePosteriorError",
    "EmptyComponentError",
    "DivergenceError",
    "FitFileError",
    "MultimodalityWarning",
    "ConvergenceWarning",
]


def _rebuild(cls: type[BaseException], message: str, state: dict) -> BaseException:
    err = cls.__new__(cls)
    err.args = (message,)
    err.__dict__.update(state)
    return err


class _Picklable:
    """Exceptions whose ``__init__`` builds the message from other arguments: pickled as (message,
    attributes), so they cross process boundaries intact (``fit_nuts``' parallel chains)."""

    def __reduce__(self):
        return _rebuild, (type(self), str(self), dict(self.__dict__))


class DegenerateComponentError(_Picklable, FloatingPointError, ValueError):
    """A component's covariance is not positive definite (it collapsed)."""

    def __init__(self, component: int, detail: str = "") -> None:
        self.component: int | None = component
        msg = (
            f"component {component} has a covariance that is not positive definite"
            f"{' (' + detail + ')' if detail else ''}: it has collapsed onto too few distinct points. "
            "Remedies: increase reg_covar (e.g. 1e-6 or more, relative to the data's scale), "
            "use fewer components, use covariance_type='diag'/'spherical'/'tied', "
            "or put a prior on the covariances with fit_map / fit_vb."
        )
        super().__init__(msg)


class DegeneratePosteriorError(DegenerateComponentError):
    """A Bayesian posterior is numerically degenerate: a posterior scale matrix W_k⁻¹ (VB) or a
    sampled precision Λ_k (NUTS) is not positive definite, or the density cannot be evaluated."""

    def __init__(self, message: str, component: int | None = None) -> None:
        self.component = component
        ValueError.__init__(self, message)


class EmptyComponentError(_Picklable, FloatingPointError, ValueError):
    """A component received (numerically) no responsibility."""

    def __init__(self, component: int, n_k: float) -> None:
        self.component = component
        self.n_k = n_k
        super().__init__(
            f"component {component} is empty (N_k = {n_k:.3g}: no data point is responsible for it), "
            "so its mean and covariance (eq. 21) are undefined. Remedies: use fewer components, "
            "another seed or init, more restarts (n_init), or a prior (fit_map / fit_vb), "
            "under which empty components fall back to the prior."
        )


class DivergenceError(_Picklable, FloatingPointError, RuntimeError):
    """An iterative fit produced a non-finite objective."""

    def __init__(self, step: int, last_finite: Any = None, message: str = "") -> None:
        self.step = step
        self.last_finite = last_finite
        super().__init__(
            message
            or f"the objective became NaN/inf at step {step}; the last finite state is attached as "
            "`.last_finite`. Lower the learning rate (lr), standardise the data, or start from "
            "fit_cavi's parameters (init=fit.params)."
        )


class FitFileError(_Picklable, ValueError):
    """A fit file (``GMMFit.save`` / ``load_fit``) that cannot be read or written: missing,
    unreadable, not a fit archive, corrupt, from a newer format, or off the schema
    (``results.fit_file``). The message names the file and the problem; ``.path`` and ``.problem``
    hold them. A ``ValueError``, as ``load_fit`` raised before the schema existed."""

    def __init__(self, path: str | os.PathLike[str], problem: str, *, writing: bool = False) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"cannot {'write' if writing else 'read'} fit file {self.path!r}: {problem}")


class MultimodalityWarning(UserWarning):
    """Several MCMC chains settled in different posterior modes (after relabelling, their means or
    mean log-likelihoods differ by several pooled posterior standard deviations): R-hat across the
    chains then measures which mode each chain happened to find, not convergence within one."""


class ConvergenceWarning(UserWarning):
    """A closed-form fit (``fit_cavi``, ``fit_map``, ``fit_vb``) stopped at ``max_iter`` iterations
    before its stopping rule |Δ objective| / N < ``tol`` was met, as scikit-learn's
    ``ConvergenceWarning`` (``sklearn.exceptions``) says for its mixtures. Not raised for
    ``max_iter = 0`` (Θ₀ only was asked for) nor ``tol = 0`` (exactly ``max_iter`` iterations were
    asked for); with restarts (``n_init``), only when the returned fit did not converge.
    Silence it with ``warnings.filterwarnings("ignore", category=ppl_gmm.ConvergenceWarning)``."""
