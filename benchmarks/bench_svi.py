"""Benchmark: the cost of a Pyro SVI step, and how fast SVI reaches the CAVI optimum.

Part 1 — ms per step of SVI on eq. 18 (K = 3, D = 2, N = 1e3, 1e4, 1e5), measured in the same
run, interleaved round by round, as CPU time of this process (``time.process_time``, one thread)
and the best round of each, so that load from other processes on a shared machine distorts little:

* ``hand``       a hand-written torch autograd step of −eq. 18 with the same parametrisation
                 as Pyro's param store (α, γ: softmax of free logits — ``transform_to(simplex)``;
                 L: strictly-lower part plus exp of the diagonal — ``LowerCholeskyTransform``;
                 μ free) and the same optimiser (``torch.optim.Adam``, lr 0.05);
* ``pyro``       ``SVI(gmm model, mean-field guide, Adam, TraceEnum_ELBO)``, validation off
                 (as inside ``fit_svi``);
* ``pyro+jit``   the same with ``JitTraceEnum_ELBO``;
* ``pyro+valid`` validation on (Pyro's default): the cost of argument/support checks;
* ``pyro/probs`` the model's z prior written as ``Categorical(probs=alpha)`` instead of
                 ``logits=log alpha``: the plate expands probs to (N, K) and torch then clamps
                 and logs every row (the overhead found and removed while writing the model);
* ``fit_svi``    a whole ``fit_svi`` step, which also records eq. 26 at every step.

Part 2 — steps and seconds until ``fit.elbo`` is within 1e-3 (relative) of the optimum that
``fit_cavi`` reaches from the same start, for plain SVI (``local_updates="gradient"``) and the
fast option (``local_updates="natural"``), plus the steps to 1e-6.

Where Pyro's overhead goes (measured with this script and torch.profiler, N = 1e4):

* a fixed ~1.5 ms of Python per step (poutine messengers, two traces, site-shape checks, packing
  of the ELBO terms) — this is most of the 3x at N = 1e3; JIT removes part of it but its graph
  executor is no faster on large tensors, so JIT helps only at small N;
* the enumeration machinery: TraceEnum_ELBO weights three (K, N) cost terms (log p(z),
  log p(x | z), −log q(z)) by q(z) obtained through a log-space einsum (max, exp, copies), where
  the hand-written step has one fused expression;
* the model's z site receives the guide's enumerated values, so Pyro's reshape fast path for a
  Categorical's own support does not apply: torch's ``Categorical.log_prob`` broadcasts the
  logits to (K, N, K) and gathers, and its backward zero-fills and scatters that tensor;
* validation (Pyro's default; switched off inside fit_svi): +0.5–1 ms at N = 1e4;
* the z prior from probs (removed: ``Categorical(logits=log α)`` keeps the plate's expansion a
  view).
Not an overhead: the simplex constraint of γ.  Pyro's param store uses ``transform_to(simplex)``
= ``SoftmaxTransform`` (``biject_to`` would be stick-breaking), the same softmax as the
hand-written step.

Usage: ``python benchmarks/bench_svi.py [--quick]`` (``--quick``: N ≤ 1e4, fewer repetitions).
Threads are pinned to 1 (``torch.set_num_threads(1)``): on a shared 2-core machine the intra-op
thread pool otherwise dominates small-tensor timings by orders of magnitude.
"""

from __future__ import annotations

import argparse
import time
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, JitTraceEnum_ELBO, TraceEnum_ELBO
from torch.distributions import constraints

import ppl_gmm as pg
from ppl_gmm.inference.svi import _svi_guide, _svi_model, _weighted_log_prob

K, LR = 3, 0.05
TRUTH = pg.GMMParams(
    torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64),
    torch.tensor([[-2.0, 0.0], [0.0, 2.0], [2.0, 0.0]], dtype=torch.float64),
    torch.tensor([[[1.0, 0.3], [0.3, 0.8]], [[0.7, -0.2], [-0.2, 1.2]], [[1.1, 0.0], [0.0, 0.6]]], dtype=torch.float64),
)


def make_data(n):
    x, _ = pg.datasets.make_mixture(n, TRUTH, seed=0)
    x = torch.as_tensor(x)
    x = (x - x.mean(0)) / x.std(0)  # the standardised units fit_svi works in
    params0 = pg.fit_cavi(x, K, seed=0, max_iter=0).params  # Θ₀ of fit_cavi / fit_svi
    return x, params0, pg.e_step(x, params0)


# --- the contenders ------------------------------------------------------------------------------
def hand_step(x, params0, gamma0):
    """−eq. 18 by hand, same parametrisation and optimiser as Pyro's param store + Adam."""
    u_alpha = params0.alpha.log().clone().requires_grad_()
    mu = params0.mu.clone().requires_grad_()
    tril0 = params0.scale_tril
    u_tril = (tril0.tril(-1) + torch.diag_embed(torch.diagonal(tril0, dim1=-2, dim2=-1).log())).requires_grad_()
    u_gamma = gamma0.clamp_min(torch.finfo(x.dtype).tiny).log().requires_grad_()
    optim = torch.optim.Adam([u_alpha, mu, u_tril, u_gamma], lr=LR)

    def step():
        optim.zero_grad()
        alpha = torch.softmax(u_alpha, -1)
        scale_tril = u_tril.tril(-1) + torch.diag_embed(torch.diagonal(u_tril, dim1=-2, dim2=-1).exp())
        gamma = torch.softmax(u_gamma, -1)
        wlp = _weighted_log_prob(x, alpha, mu, scale_tril)  # log α_k + log N(x_i | μ_k, Σ_k)
        loss = -((gamma * wlp).sum() - torch.special.xlogy(gamma, gamma).sum())  # −eq. 18
        loss.backward()
        optim.step()
        return loss.item()

    return step


def _probs_model(x, *args, k, subsample, natural):
    """The model as first written: z prior from probs (expanded to (N, K), clamped, logged)."""
    alpha = pyro.param("alpha")
    mu, scale_tril = pyro.param("mu"), pyro.param("scale_tril")
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(alpha))
        pyro.sample("x", dist.MultivariateNormal(mu[z], scale_tril=scale_tril[z]), obs=x)


def pyro_step(x, params0, gamma0, jit=False, validation=False, model=_svi_model):
    pyro.clear_param_store()
    pyro.param("alpha", params0.alpha.clone(), constraint=constraints.simplex)
    pyro.param("mu", params0.mu.clone())
    pyro.param("scale_tril", params0.scale_tril, constraint=constraints.lower_cholesky)
    pyro.param("gamma", gamma0.clamp_min(torch.finfo(x.dtype).tiny), constraint=constraints.simplex)
    elbo = (JitTraceEnum_ELBO if jit else TraceEnum_ELBO)(max_plate_nesting=1, ignore_jit_warnings=True)
    svi = SVI(model, _svi_guide, pyro.optim.Adam({"lr": LR}), elbo)
    kwargs = {"k": K, "subsample": False, "natural": False}

    def step():
        with pyro.validation_enabled(validation):
            return svi.step(x, **kwargs)

    return step


def fit_step_ms(x, n_steps):
    """A fit_svi step: (CPU time of 3m steps − CPU time of m steps) / 2m, so set-up cost cancels."""
    elapsed = []
    for steps in (n_steps, 3 * n_steps):
        start = time.process_time()
        pg.fit_svi(x, K, seed=0, num_steps=steps, tol=0, lr=LR, standardize=False)
        elapsed.append(time.process_time() - start)
    return (elapsed[1] - elapsed[0]) / (2 * n_steps) * 1e3


def per_step_ms(n, rounds, steps_per_round):
    x, params0, gamma0 = make_data(n)
    contenders = {
        "hand": hand_step(x, params0, gamma0),
        "pyro": None,
        "pyro+jit": None,
        "pyro+valid": None,
        "pyro/probs": None,
    }
    times = {name: [] for name in (*contenders, "fit_svi")}
    builders = {
        "pyro": lambda: pyro_step(x, params0, gamma0),
        "pyro+jit": lambda: pyro_step(x, params0, gamma0, jit=True),
        "pyro+valid": lambda: pyro_step(x, params0, gamma0, validation=True),
        "pyro/probs": lambda: pyro_step(x, params0, gamma0, model=_probs_model),
    }
    fit_step_ms(x, 2)  # warm-up: first-use imports and caches
    for _ in range(rounds):
        for name in contenders:
            step = contenders[name] if name == "hand" else builders[name]()  # fresh param store
            for _ in range(2):
                step()  # warm-up (JIT compiles here)
            start = time.process_time()
            for _ in range(steps_per_round):
                step()
            times[name].append((time.process_time() - start) / steps_per_round * 1e3)
        times["fit_svi"].append(fit_step_ms(x, steps_per_round))
    pyro.clear_param_store()
    return {name: min(v) for name, v in times.items()}


def convergence(x, k, init, max_plain, max_natural, standardize=True):
    """Rows (method, steps→1e-3, s→1e-3, steps→1e-6, s→1e-6, final rel, steps run)."""
    cavi = pg.fit_cavi(x, k, seed=0, init=init, tol=1e-10)
    target = float(cavi.elbo[-1])
    rows = [("cavi", cavi.n_iter, float(cavi.times[-1]))]  # wall clock, like fit_svi's .times
    for mode, steps in (("natural", max_natural), ("gradient", max_plain)):
        fit = pg.fit_svi(
            x, k, seed=0, init=init, num_steps=steps, lr=LR, local_updates=mode, tol=0, standardize=standardize
        )
        rel = (fit.elbo - target).abs() / abs(target)
        first = []
        for level in (1e-3, 1e-6):
            hit = (rel < level).nonzero()
            step = int(hit[0]) if len(hit) else None
            first += [step, float(fit.times[step]) if step is not None else None]
        rows.append((mode, *first, float(rel[-1]), steps))
    return rows


def print_rows(label, rows):
    fmt = lambda v, f: "never" if v is None else format(v, f)
    for row in rows:
        if row[0] == "cavi":
            print(f"{label:>22} {'cavi':>9} {row[1]:>7} it {row[2]:>9.2f}")
        else:
            print(
                f"{label:>22} {row[0]:>9} {fmt(row[1], 'd'):>10} {fmt(row[2], '.2f'):>9} "
                f"{fmt(row[3], 'd'):>12} {fmt(row[4], '.2f'):>9}  {row[5]:.1e} after {row[6]} steps",
                flush=True,
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N <= 1e4, fewer repetitions")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    sizes = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, 1 thread, K={K}, D=2, Adam lr={LR}\n")
    print("Part 1: CPU ms per SVI step (best of interleaved rounds); ratio = / hand-written step")
    names = ("hand", "pyro", "pyro+jit", "pyro+valid", "pyro/probs", "fit_svi")
    print(f"{'N':>8} " + " ".join(f"{n:>17}" for n in names))
    for n in sizes:
        rounds = 3 if args.quick else 5
        steps = max(3, int(2e5 // n)) if args.quick else max(5, int(1e6 // n))
        ms = per_step_ms(n, rounds, min(steps, 100))
        cells = [f"{ms[name]:8.2f} ({ms[name] / ms['hand']:4.2f}x)" for name in names]
        print(f"{n:>8} " + " ".join(f"{c:>17}" for c in cells), flush=True)

    print("\nPart 2: steps (wall-clock seconds) until eq. 18 is within 1e-3 / 1e-6 of the CAVI optimum")
    print(
        f"{'data, init':>22} {'method':>9} {'steps->1e-3':>10} {'s->1e-3':>9} {'steps->1e-6':>12} {'s->1e-6':>9}"
        "  final rel"
    )
    for n in sizes:
        x, _ = pg.datasets.make_mixture(n, TRUTH, seed=0)
        for init in ("kmeans++", "random"):
            max_plain = 600 if args.quick else (2500 if n < 100_000 else 1500)
            rows = convergence(x, K, init, max_plain=max_plain, max_natural=200 if args.quick else 300)
            print_rows(f"N={n} {init}", rows)
    faithful = pg.datasets.load_old_faithful()
    for standardize in (True, False):
        rows = convergence(
            faithful,
            2,
            "kmeans++",
            max_plain=600 if args.quick else 3000,
            max_natural=300 if args.quick else 1000,
            standardize=standardize,
        )
        print_rows(f"faithful std={standardize}", rows)


if __name__ == "__main__":
    main()
