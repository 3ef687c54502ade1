"""Plain helpers shared by test modules and benchmarks (fixtures live in conftest.py)."""


def sklearn_bgm(x, k, prior, resp0):
    """scikit-learn's BayesianGaussianMixture with the same prior (full covariance, reg_covar = 0),
    initialised from the responsibilities r₀ (its ``_initialize`` is the VB M-step from r₀;
    scikit-learn has no responsibility init): the oracle of ``fit_vb``, iteration for iteration."""
    from sklearn.mixture import BayesianGaussianMixture

    bgm = BayesianGaussianMixture(
        n_components=k, covariance_type="full", weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=prior.alpha0, mean_precision_prior=prior.beta0, mean_prior=prior.m0.numpy(),
        degrees_of_freedom_prior=prior.nu0, covariance_prior=prior.W0_inv.numpy(), reg_covar=0.0)
    bgm._check_parameters(x)
    bgm._initialize(x, resp0)
    return bgm
