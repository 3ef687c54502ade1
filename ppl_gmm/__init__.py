"""ppl_gmm: Gaussian mixture models the probabilistic-programming way.

Closed-form CAVI/EM (eq. 15–28 of the notes), a Pyro model whose SVI loss is
exactly −eq. 18, MAP, closed-form variational Bayes, Bayesian SVI and NUTS.
"""
from . import datasets
from .cavi import fit_cavi
from .closed_form import e_step, elbo, elbo_gradients, log_likelihood, m_step
from .errors import DegenerateComponentError, DivergenceError, EmptyComponentError
from .params import GMMParams
from .result import GMMFit, align, load_fit

__version__ = "0.1.0"

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
    "EmptyComponentError",
    "DivergenceError",
]
