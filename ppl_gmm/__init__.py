"""ppl_gmm: Gaussian mixture models the probabilistic-programming way.

Closed-form CAVI/EM (eq. 15–28 of the notes), a Pyro model whose SVI loss is
exactly −eq. 18, MAP, closed-form variational Bayes, Bayesian SVI and NUTS.

``import ppl_gmm as pg`` is cheap: the closed-form engine is imported eagerly,
the Pyro, ArviZ and matplotlib layers on first use.
"""
from importlib import import_module

from . import datasets
from .cavi import fit_cavi
from .closed_form import e_step, elbo, elbo_gradients, log_likelihood, m_step
from .errors import DegenerateComponentError, DegeneratePosteriorError, DivergenceError, EmptyComponentError
from .params import GMMParams
from .result import GMMFit, align, load_fit

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "gmm_model": "pyro_model",
    "meanfield_guide": "pyro_model",
    "marginal_model": "pyro_model",
    "marginal_guide": "pyro_model",
    "fit_svi": "svi",
    "NormalWishartPrior": "priors",
    "default_prior": "priors",
    "fit_map": "map_em",
    "fit_vb": "vb",
    "VBFit": "vb",
    "VBPosterior": "vb",
    "SelectionTable": "select",
    "fit_svi_bayes": "svi_bayes",
    "fit_nuts": "nuts",
    "select_k": "select",
}
_LAZY_MODULES = ("plot", "figures", "arviz_io", "pyro_model", "svi", "vb", "nuts", "demo", "cli", "select", "priors")

__all__ = [
    "GMMParams",
    "e_step",
    "m_step",
    "elbo",
    "log_likelihood",
    "elbo_gradients",
    "fit_cavi",
    "GMMFit",
    "load_fit",
    "align",
    "datasets",
    "DegenerateComponentError",
    "DegeneratePosteriorError",
    "EmptyComponentError",
    "DivergenceError",
    *_LAZY,
    "plot",
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _LAZY_MODULES:
        value = import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'ppl_gmm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
