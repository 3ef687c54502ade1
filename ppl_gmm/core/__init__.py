"""Pure maths: no loops over iterations, no Pyro. Everything else in the package builds on it.

=================  ===========================================================================
``errors``         the named exceptions (collapsed or empty components, divergence)
``validation``     input checks run before any work
``rng``            seeds: every random choice flows from one ``seed``
``threads``        the thread limiter for small problems
``linalg``         Cholesky / precision factors / log-determinants (the only implementation)
``params``         ``GMMParams`` Θ = (α, μ, Σ)
``gaussian``       log N through precision factors; the E-step normalisation (eq. 20)
``gmm``            eq. 18–21, 26, 28 and the gradients eq. 19
``priors``         the Dir × Normal-Wishart prior and all of its algebra (conjugate update, modes,
                   ln p(Θ), ln B(W, ν), E[ln |Λ|])
``vb_posterior``   the variational posterior of PRML §10.2 and its full bound (10.70–10.77)
``init``           Θ₀ (k-means++, random) and γ₀
``sources``        data sources: in memory, ``.npy`` / memmap, h5py / zarr, Dask; sample weights
``source_checks``  their checks before any work and the one validation pass of the chunked kinds
``evaluate``       a fitted model's per-row outputs and weighted sums over any source
=================  ===========================================================================
"""
