"""An adversarial sweep of the public API and the command line, each case in its own process.

    python tools/sweep.py [--jobs 2] [--timeout 120] [--only SUBSTRING ...] [--list] [-v]

Every case is run in a forked child (the parent has imported the package once, so a case costs
milliseconds, and a crash, a hang or leaked global state cannot touch the next case). A case says
what it expects:

- ``ok``      a correct, finite answer (no NaN or inf anywhere in the result);
- ``refuse``  one clear error *raised by ppl_gmm's own code*, of a type a user can catch
              (``ValueError`` / ``TypeError`` / ``OSError`` or one of the package's error classes),
              with a message that names the problem (``match``);
- ``either``  one of the two.

A case fails when it hangs (past ``--timeout``), crashes the process, raises an internal error type
(``KeyError``, ``AttributeError``, ``IndexError``, ``ZeroDivisionError``, ``OverflowError``, torch's
``RuntimeError``, ``zipfile.BadZipFile``, …) or an error raised from inside a dependency, returns
NaN/inf, or accepts input it should refuse. Command-line cases call ``ppl_gmm.app.cli.main`` with
fds 1 and 2 redirected and check the contract: exit 0 (``ok``), or exit 2 with exactly one stderr line
``ppl-gmm: error: ...`` and no traceback (``refuse``).

The sweep prints one line per failing case and a summary; it exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch.set_num_threads(1)

import ppl_gmm as pg  # noqa: E402
from ppl_gmm.app import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CATCHABLE = (ValueError, TypeError, OSError)


@dataclass
class Case:
    name: str
    expect: str  # "ok" | "refuse" | "either"
    run: Callable[[], Any]
    match: str = ""  # a fragment the refusal's message must contain (case-insensitive)
    cli: bool = False
    allow_inf: bool = False  # an exact one-sided limit ±inf is the documented answer (never NaN)


CASES: list[Case] = []


def case(name: str, expect: str, match: str = "", cli: bool = False):
    def deco(fn):
        CASES.append(Case(name, expect, fn, match, cli))
        return fn

    return deco


def add(
    name: str, expect: str, fn: Callable[[], Any], match: str = "", cli: bool = False, allow_inf: bool = False
) -> None:
    CASES.append(Case(name, expect, fn, match, cli, allow_inf))


# --- data ------------------------------------------------------------------------------------------
def faithful() -> np.ndarray:
    return pg.datasets.load_old_faithful()


def blobs(n: int = 120, d: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0] * d, [4.0] * d])
    return centres[rng.integers(0, 2, n)] + rng.standard_normal((n, d))


def params2(d: int = 2) -> pg.GMMParams:
    return pg.GMMParams(
        torch.tensor([0.5, 0.5]), torch.stack([-4 * torch.ones(d), 4 * torch.ones(d)]), torch.eye(d).repeat(2, 1, 1)
    )


BAD_DATA: dict[str, Any] = {
    "none": None,
    "string": "abc",
    "empty list": [],
    "empty (0,2)": np.empty((0, 2)),
    "nan": np.array([[np.nan, 1.0], [0.0, 1.0], [2.0, 3.0]]),
    "inf": np.array([[np.inf, 1.0], [0.0, 1.0], [2.0, 3.0]]),
    "3-d": np.zeros((4, 2, 2)),
    "ragged": [[1.0, 2.0], [3.0]],
    "object": np.array([[1.0, "a"], [2.0, 3.0]], dtype=object),
    "complex": np.ones((5, 2), dtype=complex),
    "strings": np.array([["1", "2"], ["3", "4"]]),
    "dict": {"a": 1},
    "zero columns": np.empty((5, 0)),
}
KS_BAD = {"k=0": 0, "k=-1": -1, "k=2.5": 2.5, "k='2'": "2", "k=True": True, "k=None": None, "k=10**20": 10**20}
SEEDS_BAD = {"seed=-1": -1, "seed=2.5": 2.5, "seed='1'": "1", "seed=True": True, "seed=[1]": [1]}
SEEDS_BIG = {
    "seed=2**70": 2**70,
    "seed=2**64+1": 2**64 + 1,
    "seed=uint64max": np.uint64(2**64 - 1),
    "seed=2**32": 2**32,
}


def _prior(x, k=2):
    return pg.default_prior(x, k)


FITS: dict[str, Callable[..., Any]] = {
    "fit_cavi": lambda x, k=2, **kw: pg.fit_cavi(x, k, **{"max_iter": 50, **kw}),
    "fit_map": lambda x, k=2, **kw: pg.fit_map(x, k, kw.pop("prior", None) or _prior(x, k), **{"max_iter": 50, **kw}),
    "fit_vb": lambda x, k=2, **kw: pg.fit_vb(x, k, kw.pop("prior", None) or _prior(x, k), **{"max_iter": 50, **kw}),
    "fit_svi": lambda x, k=2, **kw: pg.fit_svi(x, k, **{"num_steps": 20, **kw}),
    "fit_svi_bayes": lambda x, k=2, **kw: pg.fit_svi_bayes(
        x, k, kw.pop("prior", None) or _prior(x, k), **{"num_steps": 20, "lr": 0.05, **kw}
    ),
    "fit_streaming_vb": lambda x, k=2, **kw: pg.fit_streaming_vb(
        x, k, kw.pop("prior", None) or _prior(x, k), **{"batch_size": 50, "n_passes": 2, **kw}
    ),
    "fit_nuts": lambda x, k=2, **kw: pg.fit_nuts(
        x, k, kw.pop("prior", None) or _prior(x, k), **{"num_samples": 10, "warmup_steps": 10, **kw}
    ),
    "fit_gibbs": lambda x, k=2, **kw: pg.fit_gibbs(
        x, k, kw.pop("prior", None) or _prior(x, k), **{"num_samples": 10, "warmup_steps": 10, "num_chains": 2, **kw}
    ),
}
FITS_RAW_PRIOR = {
    "fit_map": lambda x, k=2, **kw: pg.fit_map(x, k, _prior_raw(x, k), **{"max_iter": 50, **kw}),
    "fit_vb": lambda x, k=2, **kw: pg.fit_vb(x, k, _prior_raw(x, k), **{"max_iter": 50, **kw}),
}


def _prior_raw(x, k):
    """A valid prior built without touching the (possibly bad) data, so the fit must refuse x itself."""
    return pg.NormalWishartPrior(alpha0=1.0, m0=np.zeros(2), beta0=0.01, nu0=4.0, W0=np.eye(2))


# --- cases: bad data, k and seeds for every fit ---------------------------------------------------
for fname, fit in FITS.items():
    raw = FITS_RAW_PRIOR.get(fname, fit)
    if fname in ("fit_map", "fit_vb", "fit_svi_bayes", "fit_nuts", "fit_gibbs"):
        prior_fixed = lambda x, k, fit=fit: fit(
            x, k, prior=pg.NormalWishartPrior(alpha0=1.0, m0=np.zeros(2), beta0=0.01, nu0=4.0, W0=np.eye(2))
        )
    else:
        prior_fixed = fit
    for dname, data in BAD_DATA.items():
        add(f"{fname}: data {dname}", "refuse", lambda f=prior_fixed, data=data: f(data, 2))
    for kname, k in KS_BAD.items():
        add(f"{fname}: {kname}", "refuse", lambda f=fit, k=k: f(blobs(), k))
    add(f"{fname}: k = N", "either", lambda f=fit: f(blobs(6), 6))
    add(f"{fname}: k > N", "refuse", lambda f=fit: f(blobs(6), 7))
    add(f"{fname}: identical rows", "refuse", lambda f=fit: f(np.ones((20, 2)), 2))
    for sname, s in SEEDS_BAD.items():
        add(f"{fname}: {sname}", "refuse", lambda f=fit, s=s: f(blobs(), 2, seed=s), match="seed")
    for sname, s in SEEDS_BIG.items():
        add(f"{fname}: {sname}", "ok", lambda f=fit, s=s: f(blobs(), 2, seed=s))
    add(f"{fname}: float32 data", "ok", lambda f=fit: f(blobs().astype(np.float32), 2, seed=0))
    add(f"{fname}: int data", "ok", lambda f=fit: f(np.rint(blobs() * 10).astype(int), 2, seed=0))
    add(f"{fname}: torch tensor", "ok", lambda f=fit: f(torch.as_tensor(blobs()), 2, seed=0))
    add(f"{fname}: fortran order", "ok", lambda f=fit: f(np.asfortranarray(blobs()), 2, seed=0))
    add(f"{fname}: 1-D data", "ok", lambda f=fit: f(pg.datasets.load_galaxies(), 2, seed=0))
    add(f"{fname}: k=1", "ok", lambda f=fit: f(blobs(), 1, seed=0))
    add(f"{fname}: np.int64 k", "ok", lambda f=fit: f(blobs(), np.int64(2), seed=0))
    add(f"{fname}: requires_grad tensor", "ok", lambda f=fit: f(torch.as_tensor(blobs()).requires_grad_(), 2, seed=0))
    for scale in (1e-170, 1e-150, 1e-100, 1e100, 1e150, 1e200):
        add(f"{fname}: data x {scale:g}", "either", lambda f=fit, s=scale: f(blobs() * s, 2, seed=0))
    add(f"{fname}: data shifted 1e8", "ok", lambda f=fit: f(blobs() + 1e8, 2, seed=0))
    add(f"{fname}: a point 1e7 away", "ok", lambda f=fit: f(np.vstack([blobs(), [[1e7, 1e7]]]), 2, seed=0))

# options of the closed-form fits
for fname in ("fit_cavi", "fit_map", "fit_vb"):
    fit = FITS[fname]
    for opt, bad in [
        ("max_iter", -1),
        ("max_iter", 1.5),
        ("max_iter", "10"),
        ("tol", -1.0),
        ("tol", float("nan")),
        ("tol", "small"),
        ("init", "bogus"),
        ("init", None),
        ("init", 3),
        ("progress", "yes"),
    ]:
        add(f"{fname}: {opt}={bad!r}", "refuse", lambda f=fit, o=opt, b=bad: f(blobs(), 2, **{o: b}), match=opt)
    add(
        f"{fname}: init GMMParams K=3 for k=2",
        "refuse",
        lambda f=fit: f(
            blobs(), 2, init=pg.GMMParams(torch.ones(3) / 3, torch.zeros(3, 2), torch.eye(2).repeat(3, 1, 1))
        ),
    )
    add(f"{fname}: init GMMParams D=3 for D=2", "refuse", lambda f=fit: f(blobs(), 2, init=params2(3)))
    add(f"{fname}: init random", "ok", lambda f=fit: f(blobs(), 2, init="random", seed=1))
    add(f"{fname}: init kmeans", "ok", lambda f=fit: f(blobs(), 2, init="kmeans", seed=1))
    add(f"{fname}: init GMMParams", "ok", lambda f=fit: f(blobs(), 2, init=params2()))
    add(
        f"{fname}: max_iter=0 (the start, then the closing E-step)",
        "ok",
        lambda f=fit: f(blobs(), 2, max_iter=0, seed=0),
    )
    add(f"{fname}: tol=0 max_iter=3", "ok", lambda f=fit: f(blobs(), 2, tol=0.0, max_iter=3, seed=0))
for opt, bad in [
    ("reg_covar", -1.0),
    ("reg_covar", float("nan")),
    ("reg_covar", float("inf")),
    ("n_init", 0),
    ("n_init", 1.5),
    ("covariance_type", "bogus"),
    ("covariance_type", None),
]:
    add(f"fit_cavi: {opt}={bad!r}", "refuse", lambda o=opt, b=bad: pg.fit_cavi(blobs(), 2, **{o: b}), match=opt)
for ct in ("full", "diag", "tied", "spherical"):
    add(f"fit_cavi: covariance_type={ct}", "ok", lambda ct=ct: pg.fit_cavi(blobs(), 2, covariance_type=ct, seed=0))
    add(f"fit_cavi: {ct} n_init=3", "ok", lambda ct=ct: pg.fit_cavi(blobs(), 2, covariance_type=ct, n_init=3, seed=0))
    add(
        f"fit_cavi: {ct} reg_covar=0 k=N",
        "either",
        lambda ct=ct: pg.fit_cavi(blobs(5), 5, covariance_type=ct, reg_covar=0.0, seed=0),
    )
    add(
        f"fit_cavi: {ct} x 1e-150", "either", lambda ct=ct: pg.fit_cavi(blobs() * 1e-150, 2, covariance_type=ct, seed=0)
    )
    add(f"fit_cavi: {ct} x 1e150", "either", lambda ct=ct: pg.fit_cavi(blobs() * 1e150, 2, covariance_type=ct, seed=0))
for label, sw, expect in (  # fit_cavi sample_weight (frequency weights), threads=, device=
    ("integers", lambda: np.arange(120) % 3, "ok"),
    ("fractions", lambda: np.linspace(0.1, 2.0, 120), "ok"),
    ("tiny", lambda: np.full(120, 1e-300), "either"),
    ("one row only", lambda: np.eye(1, 120)[0], "either"),
    ("negative", lambda: -np.ones(120), "refuse"),
    ("nan", lambda: np.full(120, np.nan), "refuse"),
    ("inf", lambda: np.full(120, np.inf), "refuse"),
    ("all zero", lambda: np.zeros(120), "refuse"),
    ("wrong length", lambda: np.ones(7), "refuse"),
    ("2-D", lambda: np.ones((120, 1)), "refuse"),
    ("strings", lambda: np.array(["1"] * 120), "refuse"),
):
    for ct in ("full", "tied"):
        add(
            f"fit_cavi: {ct} sample_weight {label}",
            expect,
            lambda sw=sw, ct=ct: pg.fit_cavi(blobs(), 2, covariance_type=ct, sample_weight=sw(), seed=0),
            match="sample_weight" if expect == "refuse" else "",
        )
for bad in (0, -1, 1.5, "2", True):
    add(f"fit_cavi: threads={bad!r}", "refuse", lambda b=bad: pg.fit_cavi(blobs(), 2, threads=b), match="threads")
add("fit_cavi: threads=3", "ok", lambda: pg.fit_cavi(blobs(), 2, threads=3, seed=0))
add("fit_cavi: device='cpu'", "ok", lambda: pg.fit_cavi(blobs(), 2, device="cpu", seed=0))
add("fit_cavi: device='bogus'", "refuse", lambda: pg.fit_cavi(blobs(), 2, device="bogus"), match="device")
add("fit_cavi: device=3.5", "refuse", lambda: pg.fit_cavi(blobs(), 2, device=3.5), match="device")

# SVI / NUTS options
add("fit_svi: num_steps=0", "either", lambda: pg.fit_svi(blobs(), 2, num_steps=0, seed=0))
for opt, bad in [
    ("num_steps", -5),
    ("num_steps", 2.5),
    ("lr", 0.0),
    ("lr", -0.1),
    ("lr", float("nan")),
    ("lr", float("inf")),
    ("subsample_size", 0),
    ("subsample_size", 10**6),
    ("subsample_size", 2.5),
    ("init", "bogus"),
    ("jit", "yes"),
]:
    add(f"fit_svi: {opt}={bad!r}", "refuse", lambda o=opt, b=bad: pg.fit_svi(blobs(), 2, **{o: b}), match=opt)
for fname in ("fit_svi", "fit_svi_bayes", "fit_nuts"):
    add(f"{fname}: progress='yes'", "refuse", lambda f=FITS[fname]: f(blobs(), 2, progress="yes"), match="progress")
add("select_k: progress='yes'", "refuse", lambda: pg.select_k(X_SMALL, [1, 2], progress="yes"), match="progress")
add("plot.roundoff: seed=True", "refuse", lambda: pg.plot.roundoff({"a": np.ones(3)}, seed=True), match="seed")
add("fit_svi: subsample_size=30", "ok", lambda: pg.fit_svi(blobs(), 2, num_steps=10, subsample_size=30, seed=0))
add("fit_svi: jit", "ok", lambda: pg.fit_svi(blobs(), 2, num_steps=10, jit=True, seed=0))
add("fit_svi: natural", "ok", lambda: pg.fit_svi(blobs(), 2, num_steps=10, local_updates="natural", seed=0))
add(
    "fit_svi: local_updates bogus",
    "refuse",
    lambda: pg.fit_svi(blobs(), 2, local_updates="bogus"),
    match="local_updates",
)
add("fit_svi: lr=1e6 diverges", "either", lambda: pg.fit_svi(blobs(), 2, num_steps=50, lr=1e6, seed=0))
for opt, bad in [("num_steps", -1), ("lr", -1.0), ("lr", float("nan"))]:
    add(
        f"fit_svi_bayes: {opt}={bad!r}",
        "refuse",
        lambda o=opt, b=bad: FITS["fit_svi_bayes"](blobs(), 2, **{o: b}),
        match=opt,
    )
# streaming VB and minibatches in fit_svi_bayes (issue 10, item 4)
for opt, bad in [
    ("subsample_size", 0),
    ("subsample_size", 2.5),
    ("subsample_size", 121),
    ("batch_size", 0),
    ("batch_size", 1.5),
    ("n_passes", 0),
    ("kappa", 0.5),
    ("kappa", 1.5),
    ("kappa", float("nan")),
    ("tau", -1.0),
    ("tau", float("inf")),
    ("sample_weight", np.ones(119)),
    ("sample_weight", -np.ones(120)),
    ("sample_weight", np.full(120, np.nan)),
    ("sample_weight", np.zeros(120)),
    ("progress", "yes"),
]:
    fname = "fit_svi_bayes" if opt == "subsample_size" else "fit_streaming_vb"
    add(f"{fname}: {opt}={bad!r}", "refuse", lambda f=FITS[fname], o=opt, b=bad: f(blobs(), 2, **{o: b}), match=opt)
add("fit_svi_bayes: subsample_size=30", "ok", lambda: FITS["fit_svi_bayes"](blobs(), 2, subsample_size=30, seed=0))
add("fit_streaming_vb: batch_size > N", "ok", lambda: FITS["fit_streaming_vb"](blobs(), 2, batch_size=10**6, seed=0))
add("fit_streaming_vb: batch_size 1", "ok", lambda: FITS["fit_streaming_vb"](blobs(), 2, batch_size=1, seed=0))
add(
    "fit_streaming_vb: integer weights",
    "ok",
    lambda: FITS["fit_streaming_vb"](blobs(), 2, sample_weight=np.arange(120) % 3, seed=0),
)
add(
    "fit_streaming_vb: init VBPosterior",
    "ok",
    lambda: pg.fit_streaming_vb(blobs(60), 2, init=FITS["fit_vb"](blobs(60), 2, seed=0).posterior),
)


def _svb(n_total: float = 120) -> Any:
    return pg.StreamingVB(2, _prior(blobs()), n_total=n_total, seed=0)


add(
    "StreamingVB: covariance diag",
    "refuse",
    lambda: pg.StreamingVB(2, _prior(blobs()), n_total=9, covariance_type="diag"),
    match="full",
)
add("StreamingVB: n_total 0", "refuse", lambda: _svb(0), match="n_total")
add("StreamingVB: bound before update", "refuse", lambda: _svb().bound(blobs()), match="no q yet")
add("StreamingVB: batch D mismatch", "refuse", lambda: _svb().update(blobs(d=3)), match="D = 3")
add("StreamingVB: batch nan", "refuse", lambda: _svb().update(BAD_DATA["nan"]), match="NaN")
add("StreamingVB: update, to_fit", "ok", lambda: _svb(1200).update(blobs(seed=1)).update(blobs(seed=2)).to_fit(blobs()))
for opt, bad in [
    ("num_samples", 0),
    ("num_samples", 1.5),
    ("warmup_steps", -1),
    ("num_chains", 0),
    ("num_chains", "2"),
    ("target_accept_prob", 1.5),
    ("target_accept_prob", 0.0),
    ("max_tree_depth", 0),
]:
    add(f"fit_nuts: {opt}={bad!r}", "refuse", lambda o=opt, b=bad: FITS["fit_nuts"](blobs(), 2, **{o: b}), match=opt)
for opt, bad in [
    ("num_samples", 0),
    ("num_samples", 1.5),
    ("warmup_steps", -1),
    ("num_chains", 0),
    ("num_chains", "2"),
]:
    add(f"fit_gibbs: {opt}={bad!r}", "refuse", lambda o=opt, b=bad: FITS["fit_gibbs"](blobs(), 2, **{o: b}), match=opt)
add("fit_nuts: ordered 2-D", "either", lambda: FITS["fit_nuts"](blobs(), 2, ordered=True, seed=0))
add("fit_nuts: ordered 1-D", "ok", lambda: FITS["fit_nuts"](pg.datasets.load_galaxies(), 3, ordered=True, seed=0))
add("fit_nuts: backend bogus", "refuse", lambda: FITS["fit_nuts"](blobs(), 2, backend="bogus"), match="backend")
add(
    "fit_nuts: chain_method bogus",
    "refuse",
    lambda: FITS["fit_nuts"](blobs(), 2, chain_method="x"),
    match="chain_method",
)
add("fit_nuts: 2 parallel chains, seed 2**70", "ok", lambda: FITS["fit_nuts"](blobs(), 2, num_chains=2, seed=2**70))
add("fit_nuts: warmup_steps=0", "either", lambda: FITS["fit_nuts"](blobs(), 2, warmup_steps=0, seed=0))

# priors
W = np.eye(2)
for label, kw in [
    ("m0 2-D (2,2)", {"m0": np.zeros((2, 2))}),
    ("m0 wrong D", {"m0": np.zeros(3)}),
    ("m0 nan", {"m0": np.array([np.nan, 0.0])}),
    ("W0 not PD", {"W0": -np.eye(2)}),
    ("W0 not symmetric", {"W0": np.array([[1.0, 0.5], [0.0, 1.0]])}),
    ("W0 wrong shape", {"W0": np.eye(3)}),
    ("W0 1-D", {"W0": np.ones(2)}),
    ("W0 inf", {"W0": np.array([[np.inf, 0], [0, 1.0]])}),
    ("nu0 <= D-1", {"nu0": 0.5}),
    ("nu0 nan", {"nu0": float("nan")}),
    ("beta0 0", {"beta0": 0.0}),
    ("beta0 -1", {"beta0": -1.0}),
    ("alpha0 0", {"alpha0": 0.0}),
    ("alpha0 -1", {"alpha0": -1.0}),
    ("alpha0 string", {"alpha0": "one"}),
    ("alpha0 inf", {"alpha0": float("inf")}),
]:
    base = {"alpha0": 1.0, "m0": np.zeros(2), "beta0": 0.01, "nu0": 4.0, "W0": W}
    add(f"NormalWishartPrior: {label}", "refuse", lambda kw=kw, base=base: pg.NormalWishartPrior(**{**base, **kw}))
PRIOR_3D = pg.NormalWishartPrior(alpha0=1.0, m0=np.zeros(3), beta0=0.01, nu0=5.0, W0=np.eye(3))
for fname in ("fit_map", "fit_vb", "fit_svi_bayes", "fit_nuts", "fit_gibbs"):
    add(f"{fname}: prior D=3 for D=2 data", "refuse", lambda f=FITS[fname]: f(blobs(), 2, prior=PRIOR_3D))
add("fit_vb: prior a dict", "refuse", lambda: pg.fit_vb(blobs(), 2, {"alpha0": 1.0}))
for ct in ("full", "diag", "spherical", "tied"):  # fit_vb per covariance type and weight prior (issue 11)
    for wp in ("dirichlet", "dirichlet_process"):
        add(
            f"fit_vb: {ct} {wp}",
            "ok",
            lambda ct=ct, wp=wp: FITS["fit_vb"](blobs(), 3, covariance_type=ct, weight_prior=wp),
        )
    add(f"fit_vb: {ct} x 1e150", "either", lambda ct=ct: FITS["fit_vb"](blobs() * 1e150, 2, covariance_type=ct))
    add(f"fit_vb: {ct} k=1 d=1", "ok", lambda ct=ct: FITS["fit_vb"](blobs(d=1), 1, covariance_type=ct))
add("fit_vb: covariance_type bogus", "refuse", lambda: FITS["fit_vb"](blobs(), 2, covariance_type="bogus"))
add("fit_vb: weight_prior bogus", "refuse", lambda: FITS["fit_vb"](blobs(), 2, weight_prior="pitman_yor"))
add("fit_vb: weight_prior None", "refuse", lambda: FITS["fit_vb"](blobs(), 2, weight_prior=None))
for label, sw, expect in (  # fit_vb sample_weight (frequency weights)
    ("integers", lambda: np.arange(120) % 3, "ok"),
    ("fractions", lambda: np.linspace(0.1, 2.0, 120), "ok"),
    ("one row only", lambda: np.eye(1, 120)[0], "either"),
    ("negative", lambda: -np.ones(120), "refuse"),
    ("nan", lambda: np.full(120, np.nan), "refuse"),
    ("all zero", lambda: np.zeros(120), "refuse"),
    ("wrong length", lambda: np.ones(7), "refuse"),
    ("2-D", lambda: np.ones((120, 1)), "refuse"),
    ("strings", lambda: np.array(["1"] * 120), "refuse"),
):
    add(f"fit_vb: sample_weight {label}", expect, lambda sw=sw: FITS["fit_vb"](blobs(), 2, sample_weight=sw()))
add(
    "fit_vb: DP concentration 0",
    "refuse",
    lambda: pg.fit_vb(
        blobs(), 2, pg.NormalWishartPrior(0.0, np.zeros(2), 1.0, 3.0, np.eye(2)), weight_prior="dirichlet_process"
    ),
)
for ct in ("full", "diag", "spherical", "tied"):  # fit_map per covariance type, with weights (issues 10, 11)
    add(f"fit_map: {ct}", "ok", lambda ct=ct: FITS["fit_map"](blobs(), 3, covariance_type=ct, seed=0))
    add(f"fit_map: {ct} x 1e150", "either", lambda ct=ct: FITS["fit_map"](blobs() * 1e150, 2, covariance_type=ct))
    add(f"fit_map: {ct} k=1 d=1", "ok", lambda ct=ct: FITS["fit_map"](blobs(d=1), 1, covariance_type=ct))
    add(
        f"fit_map: {ct} integer weights",
        "ok",
        lambda ct=ct: FITS["fit_map"](blobs(), 2, covariance_type=ct, sample_weight=np.arange(120) % 3, seed=0),
    )
    add(
        f"fit_map: {ct} tiny weights",
        "either",
        lambda ct=ct: FITS["fit_map"](blobs(), 2, covariance_type=ct, sample_weight=np.full(120, 1e-300)),
    )
add("fit_map: covariance_type bogus", "refuse", lambda: FITS["fit_map"](blobs(), 2, covariance_type="bogus"))
add(
    "fit_map: diag with nu0 <= 1 (1-D)",
    "refuse",
    lambda: pg.fit_map(blobs(d=1), 2, pg.NormalWishartPrior(1.0, 0.0, 1.0, 0.9, 1.0), covariance_type="diag"),
    match="nu0 > 1",
)
add(
    "fit_map: diag init with off-diagonal covariances",
    "refuse",
    lambda: pg.fit_map(blobs(), 1, init=pg.GMMParams([1.0], [[0, 0]], [[[1, 0.5], [0.5, 1]]]), covariance_type="diag"),
    match="diagonal",
)
for wname, w in {
    "short": np.ones(119),
    "negative": -np.ones(120),
    "nan": np.full(120, np.nan),
    "inf": np.full(120, np.inf),
    "all zero": np.zeros(120),
    "2-D": np.ones((120, 1)),
    "strings": np.array(["1"] * 120),
    "complex": np.ones(120, dtype=complex),
}.items():
    add(f"fit_map: sample_weight {wname}", "refuse", lambda w=w: FITS["fit_map"](blobs(), 2, sample_weight=w))
add("default_prior: k=0", "refuse", lambda: pg.default_prior(blobs(), 0))
add("default_prior: nan data", "refuse", lambda: pg.default_prior(BAD_DATA["nan"], 2))
add("default_prior: one row", "either", lambda: pg.default_prior(blobs(1), 1))

X_SMALL = blobs(60)

# --- closed-form functions -------------------------------------------------------------------------
X = blobs()
P = params2()


def gamma_ok(n=120, k=2, seed=0):
    g = np.random.default_rng(seed).dirichlet(np.ones(k), n)
    return torch.as_tensor(g)


add("e_step: ok", "ok", lambda: pg.e_step(X, P))
add("e_step: far point", "ok", lambda: pg.e_step(np.array([[1e7, 1e7]]), P))
add("e_step: D mismatch", "refuse", lambda: pg.e_step(blobs(d=3), P))
add("e_step: nan data", "refuse", lambda: pg.e_step(BAD_DATA["nan"], P))
add("e_step: params not GMMParams", "refuse", lambda: pg.e_step(X, {"alpha": 1}))
add("m_step: ok", "ok", lambda: pg.m_step(X, gamma_ok()))
for ct in ("diag", "tied", "spherical"):
    add(f"m_step: {ct}", "ok", lambda ct=ct: pg.m_step(X, gamma_ok(), covariance_type=ct))
add("m_step: rows not summing to 1", "refuse", lambda: pg.m_step(X, gamma_ok() * 0.5))
add("m_step: negative gamma", "refuse", lambda: pg.m_step(X, gamma_ok() - 0.6))
add("m_step: nan gamma", "refuse", lambda: pg.m_step(X, torch.full((120, 2), float("nan"))))
add("m_step: gamma N mismatch", "refuse", lambda: pg.m_step(X, gamma_ok(50)))
add("m_step: empty component", "refuse", lambda: pg.m_step(X, torch.tensor([[1.0, 0.0]]).repeat(120, 1)))
add("m_step: covariance_type bogus", "refuse", lambda: pg.m_step(X, gamma_ok(), covariance_type="bogus"))
add("m_step: reg_covar -1", "refuse", lambda: pg.m_step(X, gamma_ok(), reg_covar=-1.0))
add("m_step: 1-D gamma", "refuse", lambda: pg.m_step(X, torch.ones(120)))
add("elbo: ok", "ok", lambda: pg.elbo(X, gamma_ok(), P))
add("elbo: gamma with zeros", "ok", lambda: pg.elbo(X, pg.e_step(X, P), P))
add("elbo: rows not summing to 1", "refuse", lambda: pg.elbo(X, gamma_ok() * 0.5, P))
add("elbo: K mismatch", "refuse", lambda: pg.elbo(X, gamma_ok(k=3), P))
add("log_likelihood: ok", "ok", lambda: pg.log_likelihood(X, P))
add("log_likelihood: far point", "ok", lambda: pg.log_likelihood(np.array([[1e7, 1e7]]), P))
add("log_likelihood: D mismatch", "refuse", lambda: pg.log_likelihood(blobs(d=3), P))
add("elbo_gradients: ok", "ok", lambda: pg.elbo_gradients(X, gamma_ok(), P))
add(
    "elbo_gradients: alpha_k = 0",
    "either",
    lambda: pg.elbo_gradients(
        X, torch.tensor([[1.0, 0.0]]).repeat(120, 1), pg.GMMParams(torch.tensor([1.0, 0.0]), P.mu, P.cov)
    ),
    allow_inf=True,
)
add(
    "elbo_gradients: gamma underflowed to 0", "either", lambda: pg.elbo_gradients(X, pg.e_step(X, P), P), allow_inf=True
)
add(
    "elbo_gradients: far point",
    "either",
    lambda: pg.elbo_gradients(np.array([[1e7, 1e7]]), torch.tensor([[0.5, 0.5]]), P),
    allow_inf=True,
)
add("elbo_gradients: rows not summing to 1", "refuse", lambda: pg.elbo_gradients(X, gamma_ok() * 0.5, P))
for label, args in [
    ("alpha not simplex", (torch.tensor([0.5, 0.6]), P.mu, P.cov)),
    ("alpha negative", (torch.tensor([1.5, -0.5]), P.mu, P.cov)),
    ("alpha nan", (torch.tensor([np.nan, 0.5]), P.mu, P.cov)),
    ("mu wrong K", (P.alpha, torch.zeros(3, 2), P.cov)),
    ("mu nan", (P.alpha, torch.full((2, 2), float("nan")), P.cov)),
    ("cov not PD", (P.alpha, P.mu, -torch.eye(2).repeat(2, 1, 1))),
    ("cov not symmetric", (P.alpha, P.mu, torch.tensor([[[1.0, 0.5], [0.0, 1.0]]] * 2))),
    ("cov wrong shape", (P.alpha, P.mu, torch.eye(3).repeat(2, 1, 1))),
    ("cov inf", (P.alpha, P.mu, torch.tensor([[[np.inf, 0.0], [0.0, 1.0]]] * 2))),
    ("alpha 2-D", (torch.ones(2, 2) / 4, P.mu, P.cov)),
    ("strings", ("a", "b", "c")),
]:
    add(f"GMMParams: {label}", "refuse", lambda args=args: pg.GMMParams(*args))
add("GMMParams: permute bad perm", "refuse", lambda: P.permute([0, 0]))
add("GMMParams: permute out of range", "refuse", lambda: P.permute([0, 5]))
add(
    "align: K mismatch",
    "refuse",
    lambda: pg.align(P, pg.GMMParams(torch.ones(3) / 3, torch.zeros(3, 2), torch.eye(2).repeat(3, 1, 1))),
)
add("align: ok", "ok", lambda: pg.align(P, P.permute([1, 0])))
add("make_mixture: n=-1", "refuse", lambda: pg.datasets.make_mixture(-1, P))
add("make_mixture: n=2.5", "refuse", lambda: pg.datasets.make_mixture(2.5, P))
add("make_mixture: seed 2**70", "ok", lambda: pg.datasets.make_mixture(10, P, seed=2**70))
add("make_mixture: seed -1", "refuse", lambda: pg.datasets.make_mixture(10, P, seed=-1), match="seed")
add("make_mixture: params a dict", "refuse", lambda: pg.datasets.make_mixture(10, {"alpha": 1}))
for _n, _expect in [
    (-1, "refuse"),
    (2.5, "refuse"),
    (2.0, "refuse"),
    (True, "refuse"),
    ("3", "refuse"),
    (0, "ok"),
    (5, "ok"),
]:
    add(f"GMMParams.sample: n={_n!r}", _expect, lambda n=_n: P.sample(n, seed=0), match="" if _expect == "ok" else "n")
    add(
        f"GMMFit.sample: n={_n!r}",
        _expect,
        lambda n=_n: pg.fit_cavi(X, 2, seed=0).sample(n, seed=0),
        match="" if _expect == "ok" else "n",
    )
    add(
        f"VBFit.sample: n={_n!r}",
        _expect,
        lambda n=_n: pg.fit_vb(X, 2, seed=0).sample(n, seed=0),
        match="" if _expect == "ok" else "n",
    )
add("GMMParams.sample: seed -1", "refuse", lambda: P.sample(3, seed=-1), match="seed")
add("GMMParams.sample: seed 2**70", "ok", lambda: P.sample(3, seed=2**70))
add(
    "posterior_predictive: n=-1",
    "refuse",
    lambda: pg.arviz_io.posterior_predictive(pg.fit_vb(X, 2, seed=0).to_arviz(num_samples=2, seed=0), -1),
    match="n",
)
add(
    "posterior_predictive: n=3",
    "ok",
    lambda: pg.arviz_io.posterior_predictive(pg.fit_vb(X, 2, seed=0).to_arviz(num_samples=2, seed=0), 3, seed=0),
)
add("select_k: ks empty", "refuse", lambda: pg.select_k(X, []))
add("select_k: ks with 0", "refuse", lambda: pg.select_k(X, [0, 1]))
add("select_k: method bogus", "refuse", lambda: pg.select_k(X, [1, 2], method="bogus"), match="method")
add("select_k: ok bic", "ok", lambda: pg.select_k(X, [1, 2], seed=0))
add("select_k: ok vb", "ok", lambda: pg.select_k(X, [1, 2], method="vb", seed=0))
add("select_k: seed 2**70", "ok", lambda: pg.select_k(X, [1, 2], seed=2**70))


# --- results: prediction and persistence -----------------------------------------------------------
def _fit():
    return pg.fit_cavi(X, 2, seed=0)


for meth in ("predict", "predict_proba", "score_samples", "score", "bic", "aic"):
    add(f"GMMFit.{meth}: ok", "ok", lambda m=meth: getattr(_fit(), m)(X))
    add(f"GMMFit.{meth}: D mismatch", "refuse", lambda m=meth: getattr(_fit(), m)(blobs(d=3)))
    add(f"GMMFit.{meth}: nan", "refuse", lambda m=meth: getattr(_fit(), m)(BAD_DATA["nan"]))
    add(f"GMMFit.{meth}: empty", "refuse", lambda m=meth: getattr(_fit(), m)(np.empty((0, 2))))
    if hasattr(pg.VBFit, meth):
        add(f"VBFit.{meth}: D mismatch", "refuse", lambda m=meth: getattr(FITS["fit_vb"](X, 2, seed=0), m)(blobs(d=3)))
        add(f"VBFit.{meth}: nan", "refuse", lambda m=meth: getattr(FITS["fit_vb"](X, 2, seed=0), m)(BAD_DATA["nan"]))
add("GMMFit.predict_proba: far point", "ok", lambda: _fit().predict_proba(np.array([[1e7, -1e7]])))
add("VBFit.predict_proba: far point", "ok", lambda: FITS["fit_vb"](X, 2, seed=0).predict_proba(np.array([[1e7, -1e7]])))
add("VBFit.to_arviz: num_samples 0", "refuse", lambda: FITS["fit_vb"](X, 2, seed=0).to_arviz(num_samples=0))
add("VBFit.to_arviz: seed 2**70", "ok", lambda: FITS["fit_vb"](X, 2, seed=0).to_arviz(num_samples=20, seed=2**70))
add("GMMFit.to_arviz", "ok", lambda: _fit().to_arviz())
add("GMMFit.summary", "ok", lambda: _fit().summary())
add("GMMFit.save: missing dir", "refuse", lambda: _fit().save("/nonexistent/dir/fit.npz"))
add("GMMFit.save: a directory", "refuse", lambda: _fit().save(tempfile.mkdtemp()))


def _saved(mutate: Callable[[dict, dict], None] | None = None, raw: bytes | None = None, suffix=".npz") -> str:
    """A saved fit, optionally with its arrays/meta changed, or a file of raw bytes."""
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "fit" + suffix)
    if raw is not None:
        Path(path).write_bytes(raw)
        return path
    fit = pg.fit_cavi(pg.datasets.load_old_faithful(), 2, seed=0, max_iter=20)
    fit.save(path)
    if mutate is None:
        return path
    with np.load(path, allow_pickle=False) as f:
        arrays = {n: f[n] for n in f.files}
    meta = json.loads(str(arrays.pop("meta")))
    mutate(meta, arrays)
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
    return path


def _set(key, value):
    def m(meta, arrays):
        if isinstance(value, np.ndarray):
            arrays[key] = value
        elif key in arrays or key in ("alpha", "mu", "cov", "gamma", "elbo", "log_likelihood", "times"):
            if value is None:
                arrays.pop(key, None)
            else:
                arrays[key] = value
        elif value is _DELETE:
            meta.pop(key, None)
        else:
            meta[key] = value

    return m


_DELETE = object()
add("load_fit: round trip", "ok", lambda: pg.load_fit(_saved()))
for label, mut in [
    ("gamma (5,7)", _set("gamma", np.full((5, 7), 1 / 7))),
    ("gamma all nan", _set("gamma", np.full((272, 2), np.nan))),
    ("gamma rows off simplex", _set("gamma", np.full((272, 2), 0.3))),
    ("alpha missing", _set("alpha", None)),
    ("alpha not simplex", _set("alpha", np.array([0.9, 0.9]))),
    ("mu wrong shape", _set("mu", np.zeros((3, 2)))),
    ("cov not PD", _set("cov", -np.eye(2)[None].repeat(2, 0))),
    ("cov float32", _set("cov", np.eye(2, dtype=np.float32)[None].repeat(2, 0))),
    ("elbo length differs", _set("elbo", np.zeros(3))),
    ("elbo inf", _set("elbo", np.array([np.inf]))),
    ("times wrong length", _set("times", np.zeros(1000))),
    ("object array member", _set("gamma", np.array([None, 1], dtype=object))),
    ("unknown member", _set("evil", np.zeros(3))),
    ("method missing", _set("method", _DELETE)),
    ("method bogus", _set("method", "bogus")),
    ("n_iter 'lots'", _set("n_iter", "lots")),
    ("n_iter -1", _set("n_iter", -1)),
    ("n_iter true", _set("n_iter", True)),
    ("converged 'maybe'", _set("converged", "maybe")),
    ("covariance_type bogus", _set("covariance_type", "bogus")),
    ("reg_covar -1", _set("reg_covar", -1)),
    ("reg_covar string", _set("reg_covar", "x")),
    ("seed -1", _set("seed", -1)),
    ("seed string", _set("seed", "x")),
    ("info a list", _set("info", [1, 2])),
    ("format future", _set("format", "ppl_gmm.GMMFit/99")),
    ("format missing", _set("format", _DELETE)),
]:
    add(f"load_fit: {label}", "refuse", lambda mut=mut: pg.load_fit(_saved(mut)))


def _meta_list():
    path = _saved()
    with np.load(path) as f:
        arrays = {n: f[n] for n in f.files if n != "meta"}
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array("[1, 2]"), **arrays)
    return pg.load_fit(path)


def _meta_missing():
    path = _saved()
    with np.load(path) as f:
        arrays = {n: f[n] for n in f.files if n != "meta"}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return pg.load_fit(path)


def _truncated():
    path = _saved()
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    return pg.load_fit(path)


def _npy():
    path = os.path.join(tempfile.mkdtemp(), "x.npy")
    np.save(path, np.zeros(3))
    return pg.load_fit(path)


def _pickled_npy_in_zip():
    path = _saved()
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("extra.npy", buf.getvalue())
    return pg.load_fit(path)


def _huge_header():
    path = _saved()
    with np.load(path) as f:
        arrays = {n: f[n] for n in f.files}
    header = np.lib.format.header_data_from_array_1_0(arrays["gamma"])
    header["shape"] = (10**12, 2)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(arrays["gamma"].tobytes())
    with zipfile.ZipFile(path, "w") as z:
        for n, a in arrays.items():
            if n == "gamma":
                z.writestr("gamma.npy", buf.getvalue())
            else:
                b = io.BytesIO()
                np.save(b, a)
                z.writestr(n + ".npy", b.getvalue())
    return pg.load_fit(path)


add("load_fit: meta a JSON list", "refuse", _meta_list)
add("load_fit: meta missing", "refuse", _meta_missing)
add("load_fit: truncated archive", "refuse", _truncated)
add("load_fit: a .npy file", "refuse", _npy)
add("load_fit: a text file", "refuse", lambda: pg.load_fit(_saved(raw=b"a,b\n1,2\n", suffix=".npz")))
add("load_fit: an empty file", "refuse", lambda: pg.load_fit(_saved(raw=b"", suffix=".npz")))
add("load_fit: netCDF/HDF5 magic", "refuse", lambda: pg.load_fit(_saved(raw=b"\x89HDF\r\n\x1a\n" + b"\0" * 64)))
add(
    "load_fit: pickle stream",
    "refuse",
    lambda: pg.load_fit(_saved(raw=b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")),
)
add("load_fit: pickled member", "refuse", _pickled_npy_in_zip)
add("load_fit: header declares 1e12 rows", "refuse", _huge_header)
add("load_fit: missing file", "refuse", lambda: pg.load_fit("/nonexistent/fit.npz"))
add("load_fit: a directory", "refuse", lambda: pg.load_fit(tempfile.mkdtemp()))
add("load_fit: gamma missing (a fit that kept no γ)", "ok", lambda: pg.load_fit(_saved(_set("gamma", None))))


# --- data sources and sample weights (issue 10: core.sources, core.evaluate) ------------------------
def _npy_file(a: np.ndarray, allow_pickle: bool = False) -> str:
    path = os.path.join(tempfile.mkdtemp(), "x.npy")
    np.save(path, a, allow_pickle=allow_pickle)
    return path


def _nan_late(n: int = 600_000) -> np.ndarray:
    """Blobs of n rows (past the first 8 MB block of the validation pass) with a NaN in the last row."""
    a = np.tile(blobs(1000), (n // 1000, 1))
    a[-1, 1] = np.nan
    return a


def _dask(a: np.ndarray, chunks: tuple) -> Any:
    import dask.array as da

    return da.from_array(a, chunks=chunks)


BAD_NPY = {
    "complex": (lambda: np.ones((5, 2), dtype=complex), "complex"),
    "object": (lambda: np.array([[1.0, "a"], [2.0, 3.0]], dtype=object), "objects"),
    "strings": (lambda: np.array([["1", "2"], ["3", "4"]]), "strings"),
    "bool": (lambda: np.ones((5, 2), dtype=bool), "booleans"),
    "float16": (lambda: np.ones((5, 2), dtype=np.float16), "float16"),
    "records": (lambda: np.zeros(5, dtype=[("a", "f8"), ("b", "f8")]), "records"),
    "3-d": (lambda: np.zeros((4, 2, 2)), "3-D"),
    "empty": (lambda: np.empty((0, 2)), "empty"),
    "zero columns": (lambda: np.empty((5, 0)), "no columns"),
    "fortran order": (lambda: np.asfortranarray(blobs()), "Fortran"),
}
for label, (make, frag) in BAD_NPY.items():
    add(f"as_source: npy {label}", "refuse", lambda m=make: pg.as_source(_npy_file(m(), True)), match=frag)
    add(f"fit_cavi: npy {label}", "refuse", lambda m=make: FITS["fit_cavi"](_npy_file(m(), True)), match=frag)
add("as_source: not a .npy file", "refuse", lambda: pg.as_source(_csv("1,2\n3,4\n")), match="not a readable .npy")
add("as_source: missing .npy", "refuse", lambda: pg.as_source("/nonexistent/x.npy"), match="not an existing")
add("as_source: npy NaN in a later chunk", "refuse", lambda: pg.as_source(_npy_file(_nan_late())), match="599999")
add(
    "fit_cavi: npy NaN in a later chunk",
    "refuse",
    lambda: FITS["fit_cavi"](np.load(_npy_file(_nan_late()), mmap_mode="r")),
    match="599999",
)
add("as_source: dask NaN in the last chunk", "refuse", lambda: pg.as_source(_dask(_nan_late(3000), (1000, 2))))
add("as_source: dask chunked along columns", "refuse", lambda: pg.as_source(_dask(X, (50, 1))), match="columns")
add("fit_cavi: dask chunked along columns", "refuse", lambda: FITS["fit_cavi"](_dask(X, (50, 1))), match="columns")
add("GMMFit.predict: dask chunked along columns", "refuse", lambda: _fit().predict(_dask(X, (50, 1))), match="columns")
add("as_source: npy ok", "ok", lambda: pg.as_source(_npy_file(blobs())).summary.mean)
add("as_source: dask ok", "ok", lambda: pg.as_source(_dask(X, (50, 2))).summary.mean)
for meth in ("predict_proba", "score_samples", "responsibilities"):
    add(f"GMMFit.{meth}: npy ok", "ok", lambda m=meth: getattr(_fit(), m)(_npy_file(np.asarray(X))))
    add(f"GMMFit.{meth}: dask ok", "ok", lambda m=meth: getattr(_fit(), m)(_dask(X, (50, 2))).compute())
for ct in ("full", "tied"):  # fit_vb over the data sources (issue 10, item 1 for VB)
    add(f"fit_vb: npy {ct}", "ok", lambda ct=ct: pg.fit_vb(_npy_file(blobs()), 2, covariance_type=ct, seed=0))
    add(
        f"fit_vb: dask {ct} DP",
        "ok",
        lambda ct=ct: pg.fit_vb(_dask(blobs(), (50, 2)), 2, covariance_type=ct, weight_prior="dirichlet_process"),
    )
add(
    "fit_vb: memmap weighted",
    "ok",
    lambda: pg.fit_vb(np.load(_npy_file(blobs()), mmap_mode="r"), 2, sample_weight=np.arange(120) % 3, seed=0),
)
add("fit_vb: npy NaN in a later chunk", "refuse", lambda: pg.fit_vb(_npy_file(_nan_late()), 2), match="599999")
add("fit_vb: dask chunked along columns", "refuse", lambda: pg.fit_vb(_dask(X, (50, 1)), 2), match="columns")
add("fit_vb: npy D=1 k=1", "ok", lambda: pg.fit_vb(_npy_file(blobs(d=1)[:, 0]), 1, seed=0))
add("fit_vb: npy x 1e150", "either", lambda: pg.fit_vb(_npy_file(blobs() * 1e150), 2, seed=0))
for bad in (0, -1, 1.5, True, "2"):
    add(f"fit_vb: threads={bad!r}", "refuse", lambda b=bad: pg.fit_vb(_npy_file(blobs()), 2, threads=b), match="thread")
add("fit_vb: threads=3", "ok", lambda: pg.fit_vb(_npy_file(blobs()), 2, threads=3, seed=0))
add("fit_vb: device='cpu'", "ok", lambda: pg.fit_vb(blobs(), 2, device="cpu", seed=0))  # issue 10, item 7
add("fit_vb: npy device='cpu'", "ok", lambda: pg.fit_vb(_npy_file(blobs()), 2, device=torch.device("cpu"), seed=0))
add("fit_vb: device='bogus'", "refuse", lambda: pg.fit_vb(_npy_file(blobs()), 2, device="bogus"), match="device")
add("fit_vb: device=3.5", "refuse", lambda: pg.fit_vb(blobs(), 2, device=3.5), match="device")
add("fit_vb: device='cuda:x'", "refuse", lambda: pg.fit_vb(blobs(), 2, device="cuda:x"), match="device")
add(
    "VBFit.responsibilities: npy fit",
    "ok",
    lambda: pg.fit_vb(_npy_file(blobs()), 2, seed=0).responsibilities(_npy_file(blobs())),
)
BAD_WEIGHTS = {
    "wrong length": (lambda n: np.ones(n - 1), "entries"),
    "2-d": (lambda n: np.ones((n, 2)), "1-D"),
    "negative": (lambda n: np.r_[np.ones(n - 1), -1.0], "negative"),
    "nan": (lambda n: np.r_[np.ones(n - 1), np.nan], "NaN"),
    "inf": (lambda n: np.r_[np.ones(n - 1), np.inf], "infinite"),
    "all zero": (lambda n: np.zeros(n), "sums to 0"),
    "strings": (lambda n: np.array(["1"] * n), "real numbers"),
    "scalar": (lambda n: np.float64(2.0), "1-D"),
}
for label, (make, frag) in BAD_WEIGHTS.items():
    for where, call in [
        ("as_source", lambda w: pg.as_source(X, w)),
        ("as_source npy", lambda w: pg.as_source(_npy_file(np.asarray(X)), w)),
        ("as_source dask", lambda w: pg.as_source(_dask(X, (50, 2)), w)),
        ("log_likelihood", lambda w: pg.log_likelihood(X, params2(), sample_weight=w)),
        ("m_step", lambda w: pg.m_step(X, pg.e_step(X, params2()), sample_weight=w)),
        ("GMMFit.bic", lambda w: _fit().bic(X, sample_weight=w)),
        ("fit_cavi", lambda w: FITS["fit_cavi"](X, sample_weight=w)),
    ]:
        add(
            f"{where}: sample_weight {label}",
            "refuse",
            lambda c=call, m=make: c(m(len(X))),
            match=frag,
        )
add("log_likelihood: integer weights ok", "ok", lambda: pg.log_likelihood(X, params2(), sample_weight=np.arange(120)))


# --- concurrency -----------------------------------------------------------------------------------
def _threads(fname: str):
    import concurrent.futures as cf

    fit = FITS[fname]
    xs = [blobs(seed=i) for i in range(4)]
    seq = [fit(x, 2, seed=i) for i, x in enumerate(xs)]
    with cf.ThreadPoolExecutor(4) as pool:
        par = list(pool.map(lambda i: fit(xs[i], 2, seed=i), range(4)))
    for a, b in zip(seq, par):
        if isinstance(a, (pg.GMMFit, pg.VBFit)):
            if not torch.equal(a.elbo, b.elbo):
                raise AssertionError(f"{fname}: threaded result differs from sequential")
        else:
            va, vb = a.posterior["mu"].values, b.posterior["mu"].values
            if not np.array_equal(va, vb):
                raise AssertionError(f"{fname}: threaded result differs from sequential")
    return seq


for fname in ("fit_cavi", "fit_vb", "fit_svi", "fit_svi_bayes", "fit_nuts", "fit_gibbs"):
    add(f"threads: 4 x {fname}", "ok", lambda f=fname: _threads(f))


# --- command line ----------------------------------------------------------------------------------
def _csv(text: str | bytes, name="data.csv") -> str:
    path = os.path.join(tempfile.mkdtemp(), name)
    Path(path).write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _faithful_csv() -> str:
    return str(ROOT / "ppl_gmm" / "datasets" / "data" / "old_faithful.csv")


GOOD = "a,b\n" + "\n".join(f"{r[0]},{r[1]}" for r in blobs(40)) + "\n"


def _cli(*argv: str) -> int:
    try:
        return cli.main(list(argv)) or 0
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2


def cli_case(name: str, expect: str, argv_fn: Callable[[], list[str]], match: str = "") -> None:
    add(f"cli: {name}", expect, lambda: _cli(*argv_fn()), match=match, cli=True)


tmpdir = lambda: tempfile.mkdtemp()
cli_case("ok cavi", "ok", lambda: ["fit", _csv(GOOD), "-k", "2", "--no-progress"])
for m in ("svi", "map", "vb"):
    cli_case(
        f"ok {m}",
        "ok",
        lambda m=m: [
            "fit",
            _csv(GOOD),
            "-k",
            "2",
            "--method",
            m,
            "--no-progress",
            "--num-steps",
            "20",
            "--max-iter",
            "20",
        ],
    )
cli_case(
    "ok nuts",
    "ok",
    lambda: [
        "fit",
        _csv(GOOD),
        "-k",
        "2",
        "--method",
        "nuts",
        "--no-progress",
        "--num-samples",
        "10",
        "--warmup-steps",
        "10",
    ],
)
cli_case("--out ok npz", "ok", lambda: ["fit", _csv(GOOD), "-k", "2", "--out", os.path.join(tmpdir(), "f.npz")])
cli_case(
    "--out ok nc for vb",
    "ok",
    lambda: ["fit", _csv(GOOD), "-k", "2", "--method", "vb", "--out", os.path.join(tmpdir(), "f.nc")],
)
cli_case("--out missing dir", "refuse", lambda: ["fit", _csv(GOOD), "-k", "2", "--out", "/nonexistent/d/f.npz"])
cli_case("--out a directory", "refuse", lambda: ["fit", _csv(GOOD), "-k", "2", "--out", tmpdir()])
cli_case(
    "--out vb to .npz",
    "refuse",
    lambda: ["fit", _csv(GOOD), "-k", "2", "--method", "vb", "--out", os.path.join(tmpdir(), "f.npz")],
)
cli_case("--out cavi to .nc", "refuse", lambda: ["fit", _csv(GOOD), "-k", "2", "--out", os.path.join(tmpdir(), "f.nc")])
cli_case("BOM header", "ok", lambda: ["fit", _csv(b"\xef\xbb\xbf" + GOOD.encode()), "-k", "2", "--columns", "a", "b"])
cli_case("header-less numeric", "refuse", lambda: ["fit", _csv("1,2\n3,4\n5,6\n7,8\n"), "-k", "2"], match="header")
cli_case("k = rows", "refuse", lambda: ["fit", _csv("a,b\n1,2\n3,4\n5,6\n"), "-k", "3"])
cli_case("/dev/zero", "refuse", lambda: ["fit", "/dev/zero", "-k", "2"])
cli_case("a directory", "refuse", lambda: ["fit", tmpdir(), "-k", "2"])
cli_case("missing file", "refuse", lambda: ["fit", "/nonexistent.csv", "-k", "2"])
cli_case("empty file", "refuse", lambda: ["fit", _csv(""), "-k", "2"])
cli_case("only header", "refuse", lambda: ["fit", _csv("a,b\n"), "-k", "2"])
cli_case("binary file", "refuse", lambda: ["fit", _csv(bytes(range(256)) * 4), "-k", "2"])
cli_case("k=0", "refuse", lambda: ["fit", _csv(GOOD), "-k", "0"])
cli_case("k=-1", "refuse", lambda: ["fit", _csv(GOOD), "-k", "-1"])
cli_case("k=2.5", "refuse", lambda: ["fit", _csv(GOOD), "-k", "2.5"])
cli_case("k huge", "refuse", lambda: ["fit", _csv(GOOD), "-k", "100000000000000000000"])
cli_case("no k", "refuse", lambda: ["fit", _csv(GOOD)])
cli_case("unknown method", "refuse", lambda: ["fit", _csv(GOOD), "-k", "2", "--method", "em"])
cli_case("non-numeric column", "refuse", lambda: ["fit", _csv("a,b\n1,x\n2,y\n3,z\n4,w\n"), "-k", "2"])
cli_case(
    "--columns non-numeric", "refuse", lambda: ["fit", _csv("a,b\n1,x\n2,y\n3,z\n4,w\n"), "-k", "1", "--columns", "b"]
)
cli_case("--columns unknown", "refuse", lambda: ["fit", _csv(GOOD), "-k", "2", "--columns", "zzz"])
cli_case("duplicate header", "refuse", lambda: ["fit", _csv("a,a\n1,2\n3,4\n5,6\n7,8\n"), "-k", "1"])
cli_case("ragged rows", "refuse", lambda: ["fit", _csv("a,b\n1,2\n3\n5,6\n"), "-k", "1"])
cli_case("nan value", "refuse", lambda: ["fit", _csv("a,b\n1,2\nnan,4\n5,6\n7,8\n"), "-k", "1"])
cli_case("inf value", "refuse", lambda: ["fit", _csv("a,b\n1,2\ninf,4\n5,6\n7,8\n"), "-k", "1"])
cli_case(
    "1e308 values",
    "either",
    lambda: ["fit", _csv("a\n" + "\n".join(f"{v:.3e}" for v in np.linspace(1, 9, 40) * 1e307)), "-k", "2"],
)
cli_case(
    "1e-200 values",
    "either",
    lambda: ["fit", _csv("a\n" + "\n".join(f"{v:.3e}" for v in np.linspace(1, 9, 40) * 1e-200)), "-k", "2"],
)
cli_case("CRLF", "ok", lambda: ["fit", _csv(GOOD.replace("\n", "\r\n")), "-k", "2"])
cli_case(
    "quoted numbers",
    "ok",
    lambda: ["fit", _csv("a,b\n" + "\n".join(f'"{r[0]}","{r[1]}"' for r in blobs(40))), "-k", "2"],
)
cli_case("single column", "ok", lambda: ["fit", _csv("a\n" + "\n".join(str(v) for v in blobs(40)[:, 0])), "-k", "2"])
cli_case(
    "whitespace", "ok", lambda: ["fit", _csv("a , b\n" + "\n".join(f" {r[0]} , {r[1]} " for r in blobs(40))), "-k", "2"]
)
cli_case("seed 2**70", "ok", lambda: ["fit", _csv(GOOD), "-k", "2", "--seed", str(2**70)])
cli_case(
    "seed 2**70 svi",
    "ok",
    lambda: ["fit", _csv(GOOD), "-k", "2", "--seed", str(2**70), "--method", "svi", "--num-steps", "10"],
)
cli_case("seed -1", "refuse", lambda: ["fit", _csv(GOOD), "-k", "2", "--seed", "-1"])
cli_case("seed 1.5", "refuse", lambda: ["fit", _csv(GOOD), "-k", "2", "--seed", "1.5"])
cli_case("--max-iter 0", "ok", lambda: ["fit", _csv(GOOD), "-k", "2", "--max-iter", "0"])
for opt, val in [
    ("--max-iter", "-3"),
    ("--tol", "nan"),
    ("--tol", "-1"),
    ("--n-init", "0"),
    ("--reg-covar", "-1"),
    ("--reg-covar", "inf"),
    ("--num-steps", "0"),
    ("--lr", "0"),
    ("--lr", "nan"),
    ("--alpha0", "0"),
    ("--alpha0", "-1"),
    ("--num-samples", "0"),
    ("--warmup-steps", "-1"),
    ("--num-chains", "0"),
    ("--covariance-type", "bogus"),
    ("--local-updates", "bogus"),
    ("--weight-prior", "bogus"),
]:
    cli_case(f"{opt} {val}", "refuse", lambda o=opt, v=val: ["fit", _csv(GOOD), "-k", "2", o, v])
for _m in ("map", "vb"):  # --covariance-type: cavi, map and vb fit every type; svi and nuts refuse all but full
    for _ct in ("diag", "spherical", "tied"):
        cli_case(
            f"ok {_m} --covariance-type {_ct}",
            "ok",
            lambda m=_m, ct=_ct: ["fit", _csv(GOOD), "-k", "2", "--method", m, "--covariance-type", ct],
        )
for _m, _ct in (("svi", "diag"), ("nuts", "spherical")):
    cli_case(
        f"{_m} --covariance-type {_ct}",
        "refuse",
        lambda m=_m, ct=_ct: ["fit", _csv(GOOD), "-k", "2", "--method", m, "--covariance-type", ct],
        match="full covariances",
    )
cli_case(  # --weight-prior (vb): the Dirichlet process truncated at K sticks, concentration --alpha0
    "ok vb --weight-prior dirichlet_process",
    "ok",
    lambda: ["fit", _csv(GOOD), "-k", "4", "--method", "vb", "--weight-prior", "dirichlet_process", "--alpha0", "0.01"],
)
cli_case(
    "ok vb dirichlet_process tied --out .nc",
    "ok",
    lambda: [
        "fit",
        _csv(GOOD),
        "-k",
        "3",
        "--method",
        "vb",
        "--weight-prior",
        "dirichlet_process",
        "--covariance-type",
        "tied",
        "--out",
        os.path.join(tmpdir(), "f.nc"),
    ],
)
for _m in ("cavi", "svi", "map", "nuts"):
    cli_case(
        f"{_m} --weight-prior dirichlet_process",
        "refuse",
        lambda m=_m: ["fit", _csv(GOOD), "-k", "2", "--method", m, "--weight-prior", "dirichlet_process"],
        match="--weight-prior dirichlet_process is for --method vb",
    )
cli_case("figures --only bogus", "refuse", lambda: ["figures", "--only", "bogus", "--out", tmpdir()])
cli_case("figures --out a file", "refuse", lambda: ["figures", "--out", _csv("x"), "--quick"])
cli_case("no subcommand", "refuse", list)
cli_case("unknown subcommand", "refuse", lambda: ["frobnicate"])
cli_case("--help", "ok", lambda: ["--help"])
cli_case("fit --help", "ok", lambda: ["fit", "--help"])
cli_case("--version", "ok", lambda: ["--version"])


# .npy input, --dask, --scheduler (issue 10, item 6); the cluster-starting runs are in tests/app/test_cli_npy.py
def _npy(array: Any, name: str = "data.npy") -> str:
    path = os.path.join(tempfile.mkdtemp(), name)
    with open(path, "wb") as fh:  # np.save(path) would append .npy to another name
        np.save(fh, array)
    return path


_NPY_ROWS = blobs(40)
cli_case("npy ok", "ok", lambda: ["fit", _npy(_NPY_ROWS), "-k", "2", "--out", os.path.join(tmpdir(), "f.npz")])
cli_case("npy ok map", "ok", lambda: ["fit", _npy(_NPY_ROWS), "-k", "2", "--method", "map"])
cli_case("npy ok vb (in blocks)", "ok", lambda: ["fit", _npy(_NPY_ROWS), "-k", "2", "--method", "vb"])
cli_case(
    "npy ok vb diag dirichlet_process (in blocks)",
    "ok",
    lambda: [
        "fit",
        _npy(_NPY_ROWS),
        "-k",
        "2",
        "--method",
        "vb",
        "--covariance-type",
        "diag",
        "--weight-prior",
        "dirichlet_process",
    ],
)
cli_case(
    "npy ok vb --out .nc",
    "ok",
    lambda: ["fit", _npy(_NPY_ROWS), "-k", "2", "--method", "vb", "--out", os.path.join(tmpdir(), "f.nc")],
)
cli_case(
    "npy ok svi (read whole)", "ok", lambda: ["fit", _npy(_NPY_ROWS), "-k", "2", "--method", "svi", "--num-steps", "5"]
)
cli_case("npy ok 1-D float32", "ok", lambda: ["fit", _npy(_NPY_ROWS[:, 0].astype(np.float32)), "-k", "2"])
cli_case("npy ok int", "ok", lambda: ["fit", _npy((_NPY_ROWS * 100).astype(np.int32)), "-k", "2"])
cli_case("npy magic, no suffix", "ok", lambda: ["fit", _npy(_NPY_ROWS, "data.bin"), "-k", "2"])
cli_case("npy strings", "refuse", lambda: ["fit", _npy(np.array(["a", "b", "c"])), "-k", "2"], match="strings")
cli_case("npy object", "refuse", lambda: ["fit", _npy(np.array([{}], dtype=object)), "-k", "1"])
cli_case("npy complex", "refuse", lambda: ["fit", _npy(_NPY_ROWS.astype(complex)), "-k", "2"], match="complex")
cli_case("npy 3-D", "refuse", lambda: ["fit", _npy(np.zeros((4, 2, 2))), "-k", "2"], match="3-D")
cli_case("npy 0 rows", "refuse", lambda: ["fit", _npy(np.zeros((0, 2))), "-k", "2"], match="N = 0")
cli_case("npy 0 columns", "refuse", lambda: ["fit", _npy(np.zeros((5, 0))), "-k", "2"])
cli_case("npy Fortran", "refuse", lambda: ["fit", _npy(np.asfortranarray(_NPY_ROWS)), "-k", "2"], match="Fortran")
cli_case(
    "npy NaN in the last row",
    "refuse",
    lambda: ["fit", _npy(np.vstack([_NPY_ROWS, [[np.nan, 0.0]]])), "-k", "2"],
    match="40",
)
cli_case("npy CSV text", "refuse", lambda: ["fit", _csv(GOOD, "data.npy"), "-k", "2"], match=".npy")
cli_case("npy --columns", "refuse", lambda: ["fit", _npy(_NPY_ROWS), "-k", "2", "--columns", "x1"])
cli_case("npy k > N", "refuse", lambda: ["fit", _npy(_NPY_ROWS), "-k", "41"])
for _val in ("0", "-1", "1.5", "many", "100000"):
    cli_case(f"--dask {_val}", "refuse", lambda v=_val: ["fit", _npy(_NPY_ROWS), "-k", "2", "--dask", v])
for _m in ("svi", "nuts"):
    cli_case(
        f"--dask --method {_m}", "refuse", lambda m=_m: ["fit", _csv(GOOD), "-k", "2", "--dask", "2", "--method", m]
    )
cli_case(  # vb runs on a Dask array since fit_vb reads any source (a 1-worker cluster, started and closed)
    "--dask --method vb", "ok", lambda: ["fit", _npy(_NPY_ROWS), "-k", "2", "--dask", "1", "--method", "vb"]
)
cli_case(
    "--dask and --scheduler", "refuse", lambda: ["fit", _csv(GOOD), "-k", "2", "--dask", "2", "--scheduler", "x:1"]
)
cli_case(
    "--scheduler unreachable",
    "refuse",
    lambda: ["fit", _npy(_NPY_ROWS), "-k", "2", "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "0.5"],
    match="cannot connect",
)
cli_case("--scheduler malformed", "refuse", lambda: ["fit", _npy(_NPY_ROWS), "-k", "2", "--scheduler", "no port"])
cli_case("--connect-timeout 0", "refuse", lambda: ["fit", _csv(GOOD), "-k", "2", "--connect-timeout", "0"])


# --- scikit-learn estimators (issue 11, item 6: ppl_gmm.sklearn) ------------------------------------
def _sk(cls: str, **params: Any) -> Any:
    import ppl_gmm.sklearn as pgsk

    return getattr(pgsk, cls)(**params)


for _cls in ("GaussianMixture", "BayesianGaussianMixture"):
    for _opt, _bad in [
        ("n_components", 0),
        ("n_components", 2.5),
        ("n_components", 10**6),
        ("covariance_type", "banded"),
        ("tol", -1.0),
        ("tol", float("nan")),
        ("reg_covar", -1.0),
        ("max_iter", -1),
        ("n_init", 0),
        ("init_params", "spectral"),
        ("warm_start", "yes"),
        ("verbose", -2),
        ("verbose_interval", 0),
        ("method", "nuts"),
        ("dtype", "int8"),
        ("random_state", -1),
        ("random_state", "a"),
    ]:
        add(
            f"{_cls}: {_opt}={_bad!r}",
            "refuse",
            lambda c=_cls, o=_opt, b=_bad: _sk(c, **{o: b}).fit(blobs()),
            match=_opt.split("_")[0],
        )
    for _ct in ("full", "tied", "diag", "spherical"):
        add(
            f"{_cls}: {_ct} fit",
            "ok",
            lambda c=_cls, t=_ct: _sk(c, n_components=2, covariance_type=t, random_state=0).fit(blobs()).score(blobs()),
        )
    for _init in ("kmeans", "k-means++", "random", "random_from_data"):
        add(
            f"{_cls}: init_params={_init}",
            "ok",
            lambda c=_cls, i=_init: _sk(c, n_components=2, init_params=i, random_state=0).fit(blobs()).predict(blobs()),
        )
    add(
        f"{_cls}: random_state 2**70",
        "ok",
        lambda c=_cls: _sk(c, n_components=2, random_state=2**70).fit(blobs()).weights_,
    )
    add(
        f"{_cls}: float32",
        "ok",
        lambda c=_cls: _sk(c, n_components=2, dtype=np.float32, random_state=0).fit(blobs()).means_,
    )
    for _n, _expect in [(0, "refuse"), (-1, "refuse"), (2.5, "refuse"), (True, "refuse"), (3, "ok")]:
        add(
            f"{_cls}.sample: n_samples={_n!r}",
            _expect,
            lambda c=_cls, n=_n: _sk(c, n_components=2, random_state=0).fit(blobs()).sample(n),
            match="" if _expect == "ok" else "n_samples",
        )
add(
    "GaussianMixture: weights_init not summing to 1",
    "refuse",
    lambda: _sk("GaussianMixture", n_components=2, weights_init=[0.2, 0.2]).fit(blobs()),
    match="weights_init",
)
add(
    "GaussianMixture: precisions_init not PD",
    "refuse",
    lambda: _sk("GaussianMixture", n_components=2, precisions_init=-np.ones((2, 2, 2))).fit(blobs()),
    match="precisions_init",
)
add(
    "GaussianMixture: method=map diag",
    "either",
    lambda: (
        _sk("GaussianMixture", n_components=2, method="map", covariance_type="diag", random_state=0).fit(blobs()).means_
    ),
)
add(
    "BayesianGaussianMixture: weight_concentration_prior=0",
    "refuse",
    lambda: _sk("BayesianGaussianMixture", weight_concentration_prior=0.0).fit(blobs()),
    match="weight_concentration_prior",
)
add(
    "BayesianGaussianMixture: degrees_of_freedom_prior=0.5",
    "refuse",
    lambda: _sk("BayesianGaussianMixture", degrees_of_freedom_prior=0.5).fit(blobs()),
    match="degrees_of_freedom_prior",
)
add(
    "BayesianGaussianMixture: covariance_prior not PD",
    "refuse",
    lambda: _sk("BayesianGaussianMixture", covariance_prior=-np.eye(2)).fit(blobs()),
    match="covariance_prior",
)
add(
    "BayesianGaussianMixture: mean_prior wrong D",
    "refuse",
    lambda: _sk("BayesianGaussianMixture", mean_prior=[0.0]).fit(blobs()),
    match="mean_prior",
)
add(
    "BayesianGaussianMixture: N <= D default prior",
    "refuse",
    lambda: _sk("BayesianGaussianMixture").fit(blobs(5, 8)),
    match="covariance_prior",
)


# --- runner ----------------------------------------------------------------------------------------
ALLOW_INF = False  # set in the child for cases whose documented answer may hold ±inf


def _non_finite(obj: Any, path: str = "result", depth: int = 0) -> str | None:
    """The path of the first NaN (and, unless ``ALLOW_INF``, inf) inside a result, or None."""
    if depth > 6:
        return None
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().numpy() if obj.is_floating_point() else np.zeros(0)
    if isinstance(obj, np.ndarray):
        bad = np.isnan(obj) if ALLOW_INF else ~np.isfinite(obj)
        return path if obj.dtype.kind == "f" and bool(bad.any()) else None
    if isinstance(obj, float):
        return path if math.isnan(obj) or (not ALLOW_INF and math.isinf(obj)) else None
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("log_prior",):
                continue
            if (p := _non_finite(v, f"{path}[{k!r}]", depth + 1)) is not None:
                return p
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            if (p := _non_finite(v, f"{path}[{i}]", depth + 1)) is not None:
                return p
        return None
    if isinstance(obj, pg.GMMParams):
        return _non_finite({"alpha": obj.alpha, "mu": obj.mu, "cov": obj.cov}, path, depth + 1)
    if isinstance(obj, pg.GMMFit):
        return _non_finite(
            {"params": obj.params, "gamma": obj.gamma, "elbo": obj.elbo, "log_likelihood": obj.log_likelihood},
            path,
            depth + 1,
        )
    if isinstance(obj, pg.VBFit):
        post = obj.posterior
        return _non_finite(
            {
                "alpha": post.alpha,
                "m": post.m,
                "beta": post.beta,
                "nu": post.nu,
                "W": post.W,
                "gamma": obj.gamma,
                "elbo": obj.elbo,
            },
            path,
            depth + 1,
        )
    if hasattr(obj, "groups") and hasattr(obj, "posterior"):  # InferenceData
        for g in ("posterior", "log_likelihood"):
            if hasattr(obj, g):
                for name, var in getattr(obj, g).data_vars.items():
                    if var.dtype.kind == "f" and not np.isfinite(var.values).all():
                        return f"{path}.{g}.{name}"
        return None
    return None


def _child(c: Case, conn) -> None:
    global ALLOW_INF
    ALLOW_INF = c.allow_inf
    os.environ["PPL_GMM_DEBUG"] = ""
    if c.cli:
        out = tempfile.TemporaryFile()
        err = tempfile.TemporaryFile()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), write_through=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), write_through=True)
        try:
            code = c.run()
        except BaseException as e:
            code = f"raised {type(e).__name__}: {e}"
        sys.stdout.flush()
        sys.stderr.flush()
        err.seek(0)
        conn.send(("cli", code, err.read().decode(errors="replace")))
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # warnings and progress bars of the case itself
    try:
        result = c.run()
    except BaseException as e:
        tb = traceback.extract_tb(e.__traceback__)
        where = tb[-1].filename if tb else ""
        in_package = "/ppl_gmm/" in where or where.endswith("sweep.py") and isinstance(e, AssertionError)
        conn.send(
            (
                "raised",
                type(e).__name__,
                type(e).__module__,
                str(e)[:300],
                isinstance(e, CATCHABLE) or type(e).__module__.startswith("ppl_gmm"),
                in_package,
                where,
            )
        )
        return
    conn.send(("returned", _non_finite(result)))


def judge(c: Case, msg: tuple | None) -> str | None:
    """None if the case kept the contract, else why not."""
    if msg is None:
        return "crashed or hung"
    if msg[0] == "cli":
        _, code, err = msg
        if isinstance(code, str):
            return f"main() {code}"
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("\r")]
        if "Traceback" in err:
            return f"traceback on stderr: {err.strip().splitlines()[-1][:200]}"
        if c.expect == "ok" and code != 0:
            return f"exit {code}: {err.strip()[:200]}"
        if c.expect == "refuse":
            if code != 2:
                return f"exit {code} (expected 2)" + (f": {err.strip()[:150]}" if err.strip() else "")
            if len(lines) != 1 or not lines[0].startswith("ppl-gmm: error:"):
                return f"stderr not one 'ppl-gmm: error:' line: {err.strip()[:200]!r}"
            if c.match and c.match.lower() not in lines[0].lower():
                return f"message does not mention {c.match!r}: {lines[0][:200]}"
        if c.expect == "either" and code not in (0, 2):
            return f"exit {code}"
        return None
    if msg[0] == "returned":
        bad = msg[1]
        if bad is not None:
            return f"non-finite value at {bad}"
        if c.expect == "refuse":
            return "accepted bad input"
        return None
    _, name, module, text, catchable, in_package, where = msg
    if name == "AssertionError":
        return f"AssertionError: {text}"
    if c.expect == "ok":
        return f"raised {name}: {text}"
    if not catchable:
        return f"internal error type {module}.{name}: {text}"
    if not in_package:
        return f"{name} raised inside a dependency ({where.split('site-packages/')[-1]}): {text}"
    if c.match and c.match.lower() not in text.lower():
        return f"message does not mention {c.match!r}: {name}: {text}"
    return None


def run_one(c: Case, timeout: float) -> tuple[Case, str | None, float]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    t0 = time.perf_counter()
    p = ctx.Process(target=_child, args=(c, child))
    p.start()
    child.close()
    msg = None
    if parent.poll(timeout):
        try:
            msg = parent.recv()
        except EOFError:
            msg = None
    p.join(5 if msg is not None else 0.1)
    if p.is_alive():
        p.kill()
        p.join()
        if msg is None:
            return c, f"hung (> {timeout:g} s)", time.perf_counter() - t0
    return c, judge(c, msg), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default: 2)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds before a case counts as hung (default: 180)")
    ap.add_argument("--only", nargs="+", default=None, help="run the cases whose name contains one of these")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case, not only failures")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if not args.only or any(s in c.name for s in args.only)]
    if args.list:
        print("\n".join(f"{c.expect:7s} {c.name}" for c in cases))
        return 0
    import concurrent.futures as cf

    t0 = time.perf_counter()
    failed = []
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        for c, why, dt in pool.map(lambda c: run_one(c, args.timeout), cases):
            if why is not None:
                failed.append((c, why))
                print(f"FAIL  {c.name}  [{c.expect}]  {why}", flush=True)
            elif args.verbose:
                print(f"ok    {c.name}  ({dt:.1f} s)", flush=True)
    print(
        f"\n{len(cases)} cases, {len(failed)} broke the contract, {time.perf_counter() - t0:.0f} s "
        f"(load average {os.getloadavg()[0]:.2f})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
