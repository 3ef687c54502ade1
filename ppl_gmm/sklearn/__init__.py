"""scikit-learn estimators backed by ppl_gmm's fits (needs the extra: ``pip install ppl-gmm[sklearn]``).

- :class:`GaussianMixture`: ``fit_cavi`` (EM), ``fit_map`` or ``fit_svi`` behind scikit-learn's
  ``GaussianMixture`` interface;
- :class:`BayesianGaussianMixture`: ``fit_vb`` (closed-form variational Bayes) or ``fit_svi_bayes``
  behind scikit-learn's ``BayesianGaussianMixture`` interface.

Both take and return float64 numpy arrays, work in ``Pipeline`` and ``GridSearchCV``, and keep
ppl_gmm's own result as ``fit_`` (a ``GMMFit`` or ``VBFit``).
"""

from __future__ import annotations

try:
    import sklearn  # noqa: F401  (the top-level scikit-learn, not this subpackage)
except ImportError as err:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "ppl_gmm.sklearn needs scikit-learn (>= 1.3), which is not installed: pip install ppl-gmm[sklearn]"
    ) from err

from .bayesian_mixture import BayesianGaussianMixture
from .gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixture", "BayesianGaussianMixture"]
