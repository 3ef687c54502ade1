"""The ``ppl-gmm`` command line (also ``python -m ppl_gmm``).

    ppl-gmm fit FILE.csv -k K [--method {cavi,svi,map,vb,nuts}] [--columns C ...] [--out PATH] [--seed S]
    ppl-gmm demo                      SVI vs CAVI on the shipped Old Faithful data (the main job)
    ppl-gmm figures [--out DIR] [--quick] [--only NAME ...]

Bad input — an unreadable or malformed CSV, a non-numeric column, a missing value, a bad
flag or an impossible K — gives one line ``ppl-gmm: error: ...`` on stderr and exit code 2,
never a traceback (set ``PPL_GMM_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

import numpy as np

__all__ = ["main", "read_csv", "CliError", "METHODS"]

METHODS = ("cavi", "svi", "map", "vb", "nuts")
PROG = "ppl-gmm"
_MISSING = {"", "na", "n/a", "nan", "null", "none", "?", "-"}


class CliError(Exception):
    """Bad input: reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')")


# --- CSV ---------------------------------------------------------------------------------------


def _show_progress(args) -> bool:
    """Progress bars by default on a terminal; off with --no-progress or when stderr is not a
    terminal (a log file would otherwise receive every redraw)."""
    return not args.no_progress and sys.stderr.isatty()


def read_csv(path: str | os.PathLike[str], columns: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(column names, (N, D) float64 array) of a CSV with a header row.

    ``columns``: names to keep (default: every column; each must then be numeric).
    Raises :class:`CliError` naming the file, line and column of the first problem.
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [(i, r) for i, r in enumerate(csv.reader(fh, strict=True), 1) if any(c.strip() for c in r)]
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, not a CSV file") from None
    except PermissionError:
        raise CliError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a UTF-8 text file (is it a CSV?)") from None
    except csv.Error as err:
        raise CliError(f"{path}: malformed CSV: {err}") from None
    if not rows:
        raise CliError(f"{path}: the file is empty (expected a header row and data rows)")
    _, header = rows[0]
    header = [h.strip() for h in header]
    if len(rows) == 1:
        raise CliError(f"{path}: has a header row but no data rows")
    if any(not h for h in header):
        raise CliError(f"{path}: column {header.index('') + 1} of the header row has no name")
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise CliError(f"{path}: the header names column {dup!r} twice")
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise CliError(f"{path}: malformed CSV: line {line} has {len(row)} fields but the header has {len(header)}")
    if columns:
        wanted = [c.strip() for spec in columns for c in spec.split(",") if c.strip()]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise CliError(f"{path}: no column {missing[0]!r}; the columns are {', '.join(header)}")
    else:
        wanted = header
    index = [header.index(c) for c in wanted]
    data = np.empty((len(rows) - 1, len(index)))
    for r, (line, row) in enumerate(rows[1:]):
        for j, c in enumerate(index):
            data[r, j] = _number(row[c], path, line, wanted[j], select_hint=not columns)
    return wanted, data


def _number(text: str, path, line: int, column: str, select_hint: bool) -> float:
    value = text.strip()
    if value.lower() in _MISSING:
        raise CliError(f"{path}: missing value in column {column!r} at line {line} (drop or impute it first)")
    try:
        v = float(value)
    except ValueError:
        hint = "; choose numeric columns with --columns" if select_hint else ""
        raise CliError(f"{path}: column {column!r} is not numeric: line {line} has {value!r}{hint}") from None
    if not math.isfinite(v):
        raise CliError(f"{path}: non-finite value {value!r} in column {column!r} at line {line}")
    return v


# --- fitting -----------------------------------------------------------------------------------
def _prior(x, k, alpha0):
    from ..core.priors import default_prior

    prior = default_prior(x, k)
    if alpha0 is not None:
        import dataclasses

        prior = dataclasses.replace(prior, alpha0=alpha0)
    return prior


def _fit(args, x):
    k, seed, progress = args.k, args.seed, _show_progress(args)
    if args.method == "cavi":
        from ..inference.cavi import fit_cavi

        return fit_cavi(
            x,
            k,
            covariance_type=args.covariance_type,
            max_iter=args.max_iter,
            tol=args.tol,
            reg_covar=args.reg_covar,
            n_init=args.n_init,
            seed=seed,
            progress=progress,
        )
    if args.method == "svi":
        from ..inference.svi import fit_svi

        return fit_svi(
            x,
            k,
            num_steps=args.num_steps,
            lr=args.lr,
            seed=seed,
            progress=progress,
            local_updates=args.local_updates,
            tol=args.tol,
            reg_covar=args.reg_covar,
        )
    prior = _prior(x, k, args.alpha0)
    if args.method == "map":
        from ..inference.map import fit_map

        return fit_map(
            x,
            k,
            prior,
            max_iter=args.max_iter,
            tol=args.tol,
            n_init=args.n_init,
            seed=seed,
            covariance_type=args.covariance_type,
            progress=progress,
        )
    if args.method == "vb":
        from ..inference.vb import fit_vb

        return fit_vb(x, k, prior, max_iter=args.max_iter, tol=args.tol, seed=seed, progress=progress)
    from ..inference.nuts import fit_nuts

    return fit_nuts(
        x,
        k,
        prior,
        num_samples=args.num_samples,
        warmup_steps=args.warmup_steps,
        num_chains=args.num_chains,
        seed=seed,
        progress=progress,
    )


def _save(result, path, seed) -> str:
    """Write ``result``; returns what was written.  GMMFit: ``.npz`` (``load_fit``); NUTS: the
    ``InferenceData`` as netCDF; VB: 1000 draws of q as netCDF (``arviz_io.load_inference_data``)."""
    from ..results import arviz_io

    if hasattr(result, "save"):
        result.save(path)
        return f"saved to {path} (read it with ppl_gmm.load_fit)"
    if hasattr(result, "to_arviz"):
        result = result.to_arviz(num_samples=1000, seed=seed)
        what = "1000 draws of the VB posterior"
    else:
        what = "the NUTS InferenceData"
    arviz_io.save_inference_data(result, path)
    return f"saved {what} to {path} as netCDF (read it with ppl_gmm.arviz_io.load_inference_data)"


# --- commands ----------------------------------------------------------------------------------
def _cmd_fit(args) -> int:
    from ..core.validation import check_k

    if args.k < 1:
        raise CliError(f"-k must be at least 1, got {args.k}")
    names, x = read_csv(args.file, args.columns)
    check_k(args.k, x.shape[0])
    print(
        f"{args.file}: N = {x.shape[0]} rows, D = {x.shape[1]} columns ({', '.join(names)}); "
        f"K = {args.k}, method {args.method}, seed {args.seed}"
    )
    result = _fit(args, x if x.shape[1] > 1 else x[:, 0])
    from ..results.text import format_result

    print(format_result(result, names))
    if args.out:
        print(_save(result, args.out, args.seed))
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(seed=args.seed, num_steps=args.num_steps, natural_steps=args.natural_steps, progress=_show_progress(args))
    return 0


def _cmd_figures(args) -> int:
    from ..viz.figures import FIGURES, make_figures

    if args.list:
        for name, (fn, filename) in FIGURES.items():
            print(f"{name:<18} {filename:<26} {fn.__doc__.strip().splitlines()[0]}")
        return 0
    if args.only:
        unknown = [n for n in args.only if n not in FIGURES]
        if unknown:
            raise CliError(f"unknown figure {unknown[0]!r}; choose from {', '.join(FIGURES)}")
    results = make_figures(args.out, quick=args.quick, only=args.only)
    failed = [n for n, r in results.items() if isinstance(r, Exception)]
    if failed:
        print(f"{PROG}: {len(failed)} figure(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = _Parser(prog=PROG, description="Gaussian mixture models the probabilistic-programming way.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="{fit,demo,figures}")

    f = sub.add_parser("fit", help="fit a CSV's numeric columns and print a summary")
    f.add_argument("file", metavar="FILE.csv", help="CSV file with a header row")
    f.add_argument("-k", type=int, required=True, help="number of components K")
    f.add_argument("--method", choices=METHODS, default="cavi", help="inference method (default: cavi)")
    f.add_argument("--columns", nargs="+", metavar="C", help="column names to use (default: all)")
    f.add_argument(
        "--out", metavar="PATH", help="save the result (cavi/svi/map: .npz for load_fit; vb/nuts: netCDF InferenceData)"
    )
    f.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = f.add_argument_group("cavi / map / vb")
    g.add_argument("--max-iter", type=int, default=1000)
    g.add_argument("--tol", type=float, default=1e-8)
    g.add_argument("--n-init", type=int, default=1)
    g.add_argument("--covariance-type", choices=("full", "diag", "spherical", "tied"), default="full")
    g.add_argument("--reg-covar", type=float, default=1e-6)
    g = f.add_argument_group("svi")
    g.add_argument("--num-steps", type=int, default=2000)
    g.add_argument("--lr", type=float, default=0.05)
    g.add_argument("--local-updates", choices=("gradient", "natural"), default="gradient")
    g = f.add_argument_group("map / vb / nuts (prior: default_prior(x, k))")
    g.add_argument("--alpha0", type=float, help="Dirichlet concentration (default: that of default_prior)")
    g.add_argument("--num-samples", type=int, default=1000)
    g.add_argument("--warmup-steps", type=int, default=500)
    g.add_argument("--num-chains", type=int, default=1)
    f.set_defaults(run=_cmd_fit)

    d = sub.add_parser("demo", help="SVI vs CAVI on the shipped Old Faithful data")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--num-steps", type=int, default=3000, help="plain SVI steps (default: 3000)")
    d.add_argument("--natural-steps", type=int, default=200, help="natural-gradient SVI steps (0: skip)")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(run=_cmd_demo)

    fg = sub.add_parser("figures", help="regenerate the figures (byte-identical on re-run)")
    fg.add_argument("--out", default="figures", metavar="DIR", help="output directory (default: figures)")
    fg.add_argument("--quick", action="store_true", help="fewer steps and draws (for CI)")
    fg.add_argument("--only", nargs="+", metavar="NAME", help="only these figures (see --list)")
    fg.add_argument("--list", action="store_true", help="list the figures and exit")
    fg.set_defaults(run=_cmd_figures)
    return p


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failure, 2 bad input)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        return _main(argv)


def _main(argv) -> int:
    debug = bool(os.environ.get("PPL_GMM_DEBUG"))
    try:
        args = _parser().parse_args(argv)
        return args.run(args)
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CliError, ValueError, TypeError, FloatingPointError) as err:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug or a failed fit: still one line, and a way to see more
        if debug:
            raise
        print(
            f"{PROG}: error: {type(err).__name__}: {_one_line(err)} (set PPL_GMM_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
