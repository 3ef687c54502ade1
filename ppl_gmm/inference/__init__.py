"""The estimators. Two drivers carry every optimisation loop:

- ``ascent.fit_ascent`` — restarts, trace, stopping rule, progress, divergence checks and the
  closing E-step of every closed-form coordinate ascent: ``cavi`` (on the fused kernel
  ``_engine``), ``map`` and ``vb`` (on the blocked kernel ``_vb_kernel``);
- ``svi_driver.run_svi`` — the SVI loop of ``svi`` and ``svi_bayes``.

``nuts`` (Z enumerated out) and ``gibbs`` (blocked Gibbs, Z kept; all chains vectorised) sample the
Bayesian model; ``model_selection`` chooses K. Imports ``core``, ``ppl``
and ``results``."""
