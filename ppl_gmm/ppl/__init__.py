"""The Pyro programs: the GMM's generative process (``model``), the Bayesian model and its
mean-field guide (``bayes``), and the positive-definite transform they sample through
(``transforms``). Imports ``core`` only."""
