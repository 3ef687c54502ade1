"""ppl_gmm: Gaussian mixture models the probabilistic-programming way.

Closed-form CAVI/EM (eq. 15–28 of the notes, ``docs/maths.md``), a Pyro model whose SVI loss is
exactly −eq. 18, MAP, closed-form variational Bayes, Bayesian SVI, NUTS and blocked Gibbs sampling.

The package is layered; each folder imports only from the folders before it::

    core       pure maths: Θ, log N, eq. 18–21/26/28, priors, the VB posterior, initialisation
    ppl        the Pyro programs: models, guides, transforms
    results    GMMFit, VBFit, save/load, component matching, ArviZ, text
    inference  one ascent driver (CAVI, MAP, VB), one SVI driver (SVI, Bayesian SVI), NUTS, Gibbs, select_k
    viz, app   plots and the paper's figures; the command line and the demo

``import ppl_gmm as pg`` is cheap: the public names are imported on first use, so Pyro, ArviZ and
matplotlib load only when a function that needs them is called.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.4.0"

# public name -> module that defines it (imported on first access)
_PUBLIC = {
    "GMMParams": "core.params",
    "as_source": "core.sources",
    "e_step": "core.gmm",
    "m_step": "core.gmm",
    "elbo": "core.gmm",
    "log_likelihood": "core.gmm",
    "elbo_gradients": "core.gmm",
    "NormalWishartPrior": "core.priors",
    "default_prior": "core.priors",
    "VBPosterior": "core.vb_posterior",
    "DegenerateComponentError": "core.errors",
    "DegeneratePosteriorError": "core.errors",
    "EmptyComponentError": "core.errors",
    "DivergenceError": "core.errors",
    "FitFileError": "core.errors",
    "MultimodalityWarning": "core.errors",
    "ConvergenceWarning": "core.errors",
    "gmm_model": "ppl.model",
    "meanfield_guide": "ppl.model",
    "marginal_model": "ppl.model",
    "marginal_guide": "ppl.model",
    "GMMFit": "results.gmm_fit",
    "load_fit": "results.gmm_fit",
    "VBFit": "results.vb_fit",
    "SelectionTable": "results.selection",
    "align": "results.matching",
    "fit_cavi": "inference.cavi",
    "fit_map": "inference.map",
    "fit_vb": "inference.vb",
    "fit_svi": "inference.svi",
    "fit_svi_bayes": "inference.svi_bayes",
    "fit_streaming_vb": "inference.streaming_vb",
    "StreamingVB": "inference.streaming_vb",
    "fit_nuts": "inference.nuts",
    "fit_gibbs": "inference.gibbs",
    "select_k": "inference.model_selection",
}

# modules reachable as attributes: the layers, and the names of the 0.1 modules (see CHANGELOG.md)
_MODULES = {
    "datasets": "datasets",
    "core": "core",
    "ppl": "ppl",
    "results": "results",
    "inference": "inference",
    "viz": "viz",
    "app": "app",
    "sklearn": "sklearn",  # scikit-learn estimators (needs the sklearn extra)
    "plot": "viz.plot",
    "figures": "viz.figures",
    "arviz_io": "results.arviz_io",
    "demo": "app.demo",
    "cli": "app.cli",
    "closed_form": "core.gmm",
    "params": "core.params",
    "priors": "core.priors",
    "errors": "core.errors",
    "vb_posterior": "core.vb_posterior",
    "pyro_model": "ppl.model",
    "bayes_model": "ppl.bayes",
    "result": "results.gmm_fit",
    "report": "results.text",
    "cavi": "inference.cavi",
    "map_em": "inference.map",
    "vb": "inference.vb",
    "svi": "inference.svi",
    "svi_bayes": "inference.svi_bayes",
    "nuts": "inference.nuts",
    "gibbs": "inference.gibbs",
    "select": "inference.model_selection",
}

__all__ = [*_PUBLIC, "datasets", "plot", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    elif name in _MODULES:
        value = import_module(f".{_MODULES[name]}", __name__)
    else:
        raise AttributeError(f"module 'ppl_gmm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_MODULES))
