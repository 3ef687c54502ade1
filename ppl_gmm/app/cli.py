"""The ``ppl-gmm`` command line (also ``python -m ppl_gmm``).

    ppl-gmm fit FILE.csv -k K [--method {cavi,svi,map,vb,nuts}] [--columns C ...] [--no-header] [--out PATH]
    ppl-gmm fit FILE.npy -k K [--dask N | --scheduler ADDRESS] ...   a memory-mapped .npy, read in blocks
    ppl-gmm demo                      SVI vs CAVI on the shipped Old Faithful data (the main job)
    ppl-gmm figures [--out DIR] [--quick] [--only NAME ...]

The contract. Exit code 0: done. Exit code 2: bad input, reported as one line
``ppl-gmm: error: ...`` on stderr, never a traceback (set ``PPL_GMM_DEBUG=1`` to see one), and
found before any fitting starts: a bad flag or number, an input that is not a regular UTF-8 CSV
file of at most 1 GiB (:data:`~ppl_gmm.app.csv_input.MAX_INPUT_BYTES`) with lines of at most
2**20 characters, a malformed CSV, a non-numeric or missing value, a first row of numbers read as a header
(use ``--no-header``), a K the data cannot support (:func:`check_k_supported`), or an ``--out``
path that cannot be written or whose extension does not match the method (:data:`OUT_SUFFIX`).
A ``.npy`` input (``npy_input``) is memory-mapped and validated by one pass over its blocks (a bad
dtype or shape, NaN/inf naming the row: exit 2); ``--dask N`` / ``--scheduler ADDRESS``
(``dask_session``) fit it, or a CSV, as a Dask array chunked by rows on a local cluster of N worker
processes or an existing one (cavi and map only; an unreachable scheduler: exit 2). A fit that
stopped at ``--max-iter`` before converging prints one line ``ppl-gmm: warning: ...`` on stderr
(:class:`~ppl_gmm.core.errors.ConvergenceWarning`).
Exit code 1: a fit or a figure failed on valid input (still one line). Exit code 130: interrupted.
Exit code 141 (128 + SIGPIPE, what a shell reports for a process killed by a broken pipe): the
reader of stdout went away (``ppl-gmm ... | head``); the command stops quietly.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from ..core.errors import ConvergenceWarning, MultimodalityWarning
from .csv_input import MAX_INPUT_BYTES, MAX_LINE_CHARS, CliError, read_csv
from .dask_session import DASK_METHODS, check_dask_method, dask_client
from .npy_input import column_names, in_memory, is_npy, npy_dask_array, open_npy

__all__ = [
    "main",
    "read_csv",
    "CliError",
    "METHODS",
    "OUT_SUFFIX",
    "MAX_INPUT_BYTES",
    "MAX_LINE_CHARS",
    "MAX_RESTARTS",
    "EXIT_BROKEN_PIPE",
    "check_k_supported",
    "check_k_rows",
    "check_out_file",
    "check_out_dir",
]

METHODS = ("cavi", "svi", "map", "vb", "nuts")
#: The file format --out writes, by method: a ``GMMFit`` as ``.npz`` (``ppl_gmm.load_fit``), or an
#: ArviZ ``InferenceData`` as netCDF ``.nc`` (``ppl_gmm.arviz_io.load_inference_data``).
OUT_SUFFIX = {"cavi": ".npz", "svi": ".npz", "map": ".npz", "vb": ".nc", "nuts": ".nc"}
#: The most restarts (--n-init) and chains (--num-chains): their seeds are spawned up front.
MAX_RESTARTS = 10_000
#: The exit code when stdout's reader has gone (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141
#: The most local Dask workers (--dask N).
MAX_WORKERS = 1024
#: The package's warnings printed as one line "ppl-gmm: warning: ..." (others keep Python's format).
ONE_LINE_WARNINGS = (ConvergenceWarning, MultimodalityWarning)
PROG = "ppl-gmm"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default: "(default: X)", "(default: off)" for a flag,
    unless the help already states it or the option is required."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or action.required or action.default in (None, argparse.SUPPRESS):
            return text
        if action.nargs == 0 and action.default is False:
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


# --- option values -----------------------------------------------------------------------------
def _shown(text: str, quote: bool = True) -> str:
    """``text`` for a message, cut at 40 characters."""
    cut = text if len(text) <= 40 else text[:40] + "..."
    return repr(cut) if quote else cut


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum (and <= maximum); any size, so seeds like 2**70 parse."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            if text.strip().isdigit():  # longer than Python converts (sys.get_int_max_str_digits())
                raise argparse.ArgumentTypeError(f"has {len(text.strip())} digits, more than Python reads") from None
            raise argparse.ArgumentTypeError(f"invalid int value: {_shown(text)}") from None
        if value < minimum:
            what = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {what}, got {_shown(text.strip(), quote=False)}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {_shown(text.strip(), quote=False)}")
        return value

    return parse


def _real(positive: bool) -> Callable[[str], float]:
    """An argparse type: a finite number, > 0 (``positive``) or >= 0."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {_shown(text)}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'> 0' if positive else '>= 0'}, got {_shown(text.strip(), quote=False)}"
            )
        return value

    return parse


def _show_progress(args) -> bool:
    """Progress bars by default on a terminal; off with --no-progress or when stderr is not a
    terminal (a log file would otherwise receive every redraw)."""
    return not args.no_progress and sys.stderr.isatty()


# --- output paths ------------------------------------------------------------------------------
def _stat(path: str | os.PathLike[str], flag: str) -> os.stat_result | None:
    """os.stat, None if nothing is there; any other failure (a name too long, a NUL byte, a
    component that is a file) is bad input."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CliError(f"{flag} {path}: cannot write there: {err.strerror or err}") from None
    except ValueError:
        raise CliError(f"{flag} {os.fspath(path)!r}: not a valid path") from None


def _writable_dir(directory: Path, flag: str, path) -> None:
    st = _stat(directory, flag)
    if st is None:
        raise CliError(f"{flag} {path}: the directory {directory} does not exist")
    if not stat.S_ISDIR(st.st_mode):
        raise CliError(f"{flag} {path}: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CliError(f"{flag} {path}: the directory {directory} is not writable")


def check_out_file(path: str, method: str, source: str | None = None) -> None:
    """Refuse, before any work, an ``--out`` that cannot be written or whose extension is not the
    method's format (:data:`OUT_SUFFIX`); ``source`` is the input file, never overwritten."""
    suffix = OUT_SUFFIX[method]
    if not path:
        raise CliError("--out: the path is empty")
    out = Path(path)
    st = _stat(out, "--out")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise CliError(f"--out {path}: is a directory; give a file name ending in {suffix}")
    if out.suffix.lower() != suffix:
        fmt = "a GMMFit as .npz (read with ppl_gmm.load_fit)" if suffix == ".npz" else "netCDF InferenceData"
        example = f"{out.stem or 'fit'}{suffix}"
        raise CliError(f"--out {path}: --method {method} saves {fmt}; name the file with {suffix}, e.g. {example}")
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise CliError(f"--out {path}: exists and is not a regular file")
        if source is not None and os.path.exists(source) and os.path.samefile(out, source):
            raise CliError(f"--out {path}: is the input file; choose another name")
        if not os.access(out, os.W_OK):
            raise CliError(f"--out {path}: the file exists and is not writable")
    _writable_dir(out.parent, "--out", path)


def check_out_dir(path: str) -> None:
    """Refuse, before any work, a figures ``--out`` that is not (and cannot become) a writable directory."""
    if not path:
        raise CliError("--out: the path is empty")
    out = Path(path).absolute()
    st = _stat(out, "--out")
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise CliError(f"--out {path}: exists and is not a directory")
        _writable_dir(out, "--out", path)
        return
    parent = out.parent
    while _stat(parent, "--out") is None:  # the nearest existing ancestor; the root always exists
        parent = parent.parent
    _writable_dir(parent, "--out", path)


# --- which K the data support ------------------------------------------------------------------
def _rows_needed(k: int, d: int, covariance_type: str) -> tuple[int, str]:
    if covariance_type == "full":
        return k * (d + 1), "K (D + 1): D + 1 per component for a non-singular covariance"
    if covariance_type == "tied":
        return k + d, "K + D: the shared covariance has N - K degrees of freedom"
    return 2 * k, "2 K: two per component for a variance"


def check_k_supported(k: int, x: np.ndarray, method: str, covariance_type: str = "full") -> int:
    """Refuse a K the data cannot support, before any fitting. Let N' be the number of distinct rows.

    - every method: the library's rule (1 <= K <= N, ``core.validation.check_k``), and N' > K;
      with N' <= K every component can sit on its own point and the answer is degenerate;
    - cavi and svi (maximum likelihood, no prior): N' >= K (D + 1) for full covariances (each
      needs D + 1 points to be non-singular), K + D for tied, 2 K for diag and spherical; svi
      fits full covariances. --method vb or map, whose priors keep small clusters well-posed, do
      not need this;
    - map, vb and nuts (the default prior is built from the data covariance): N' >= D + 1.
    """
    n, d = x.shape
    distinct = len(np.unique(x + 0.0, axis=0))  # + 0.0: -0.0 and 0.0 are one value
    have = f"the data have {distinct} distinct row{'s' if distinct != 1 else ''}" + (
        f" among N = {n}" if distinct != n else ""
    )
    return _check_k_counts(k, n, d, distinct, have, method, covariance_type)


def check_k_rows(k: int, n: int, d: int, method: str, covariance_type: str = "full") -> int:
    """:func:`check_k_supported` for data read in blocks (a ``.npy`` or Dask input), counting the
    N rows instead of the distinct ones (counting those would need the whole data at once)."""
    return _check_k_counts(k, n, d, n, f"the data have N = {n} row{'s' if n != 1 else ''}", method, covariance_type)


def _check_k_counts(k: int, n: int, d: int, distinct: int, have: str, method: str, covariance_type: str) -> int:
    from ..core.validation import check_k

    k = check_k(k, n)
    if distinct <= k:
        raise CliError(
            f"-k {k} needs more than {k} distinct rows, but {have}: each component could sit on a point of its own "
            "and the fit would be degenerate; use a smaller -k"
        )
    if method in ("cavi", "svi"):
        kind = covariance_type if method == "cavi" else "full"
        need, why = _rows_needed(k, d, kind)
        if distinct < need:
            raise CliError(
                f"--method {method} with -k {k} and {kind} covariances on D = {d} columns needs at least {need} "
                f"distinct rows ({why}), but {have}; use a smaller -k, or --method vb or map, whose priors keep "
                "small clusters well-posed"
            )
    elif distinct <= d:
        raise CliError(
            f"--method {method}'s default prior needs a non-singular data covariance, so at least D + 1 = {d + 1} "
            f"distinct rows, but {have}; use fewer --columns"
        )
    return k


# --- fitting -----------------------------------------------------------------------------------
def _prior(x, k, alpha0):
    """default_prior(x, k) (``default_prior_source`` for a source read in blocks), with --alpha0.
    For a source without --alpha0: None, so that fit_map builds the same prior in its own pass."""
    import dataclasses

    from ..core.priors import default_prior, default_prior_source
    from ..core.sources import Source

    if isinstance(x, Source):
        if alpha0 is None:
            return None
        return dataclasses.replace(default_prior_source(x, k), alpha0=alpha0)
    prior = default_prior(x, k)
    return prior if alpha0 is None else dataclasses.replace(prior, alpha0=alpha0)


def _fit(args, x, prior):
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
    if args.k < 1:
        raise CliError(f"-k must be at least 1, got {args.k}")
    if args.method != "cavi" and args.covariance_type != "full":
        raise CliError(
            f"--covariance-type {args.covariance_type} is for --method cavi; {args.method} fits full covariances"
        )
    flag = "--dask" if args.dask is not None else "--scheduler" if args.scheduler is not None else None
    if flag is not None:
        check_dask_method(args.method, flag)
    npy = is_npy(args.file)
    if npy and (args.columns or args.no_header):
        raise CliError(f"{'--columns' if args.columns else '--no-header'} is for CSV input; a .npy file is fit whole")
    if args.out is not None:
        check_out_file(args.out, args.method, args.file)
    if flag is None and not npy:
        names, x = read_csv(args.file, args.columns, header=not args.no_header)
        check_k_supported(args.k, x, args.method, args.covariance_type)
        return _fit_and_report(args, names, x if x.shape[1] > 1 else x[:, 0], f"N = {x.shape[0]} rows")
    if flag is not None:
        return _fit_on_dask(args, flag, npy)
    source = open_npy(args.file)  # memory-mapped, validated in one pass over its blocks
    names = column_names(source.d)
    if args.method in DASK_METHODS:  # cavi, map: read in blocks, whatever the size
        check_k_rows(args.k, source.n, source.d, args.method, args.covariance_type)
        return _fit_and_report(args, names, source, f"N = {source.n} rows, memory-mapped")
    x = in_memory(source, args.method)
    check_k_supported(args.k, x, args.method, args.covariance_type)
    return _fit_and_report(args, names, x if x.shape[1] > 1 else x[:, 0], f"N = {source.n} rows")


def _fit_on_dask(args, flag: str, npy: bool) -> int:
    """--dask N / --scheduler ADDRESS: the data as a Dask array chunked by rows, fit on the cluster."""
    workers = args.dask or 2  # --scheduler: chunks as for two workers until the cluster answers
    if npy:
        names, arr = None, npy_dask_array(args.file, workers)
        d = arr.shape[1] if arr.ndim == 2 else 1
        check_k_rows(args.k, arr.shape[0], d, args.method, args.covariance_type)
    else:
        names, arr = read_csv(args.file, args.columns, header=not args.no_header)
        check_k_supported(args.k, arr, args.method, args.covariance_type)
        d = arr.shape[1]
    with dask_client(args.dask, args.scheduler, args.connect_timeout) as client:
        if isinstance(arr, np.ndarray):
            import dask.array as da

            from .npy_input import chunk_rows

            arr = da.from_array(arr, chunks=(chunk_rows(arr.shape[0], d, workers), d))
        from ..core.sources import as_source

        source = as_source(arr, name=args.file)  # the validation pass, on the workers
        if args.dask:
            where = f"a local Dask cluster of {args.dask} worker{'s' if args.dask != 1 else ''}"
        else:
            where = f"the Dask scheduler {args.scheduler} ({len(client.scheduler_info().get('workers', {}))} workers)"
        what = f"N = {source.n} rows in {len(source.dask_array.chunks[0])} chunks on {where}"
        return _fit_and_report(args, names or column_names(source.d), source, what)


def _fit_and_report(args, names: list[str], data, what: str) -> int:
    """The prior (map, vb, nuts; may refuse the data), the header line, the fit, its summary, --out."""
    prior = _prior(data, args.k, args.alpha0) if args.method in ("map", "vb", "nuts") else None
    print(
        f"{args.file}: {what}, D = {len(names)} columns ({', '.join(names)}); "
        f"K = {args.k}, method {args.method}, seed {args.seed}"
    )
    result = _fit(args, data, prior)
    from ..results.text import format_result

    print(format_result(result, names))
    if args.out is not None:
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
    check_out_dir(args.out)
    results = make_figures(args.out, quick=args.quick, only=args.only)
    failed = [n for n, r in results.items() if isinstance(r, Exception)]
    if failed:
        print(f"{PROG}: {len(failed)} figure(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


_FIT_EPILOG = f"""\
input: a UTF-8 CSV file (a byte-order mark is dropped), a regular file of at most {MAX_INPUT_BYTES >> 30} GiB
  with lines of at most {MAX_LINE_CHARS:,} characters. Its first row names the columns; a first row of
  numbers only is refused as a header: pass --no-header to read it as data, columns x1..xD.
  Or a .npy file (a name ending in .npy, or numpy's magic bytes) of any size: float32, float64 or
  integers, (N,) or (N, D) in C order, columns x1..xD. cavi and map memory-map it and read it in
  blocks (NaN/inf refused, naming the row, before the fit); vb, svi and nuts read it whole
  (at most {MAX_INPUT_BYTES >> 30} GiB).
dask: --dask N or --scheduler ADDRESS fit the data (CSV or .npy) as a Dask array chunked by rows,
  where the chunks live; cavi and map only. A .npy is read by the workers from its path.
K: 1 <= K <= N, and more distinct rows than K for every method; cavi and svi (no prior) need
  at least K (D + 1) distinct rows for full covariances (K + D tied, 2 K diag or spherical);
  map, vb and nuts need D + 1 (their default prior), and their priors keep small clusters
  well-posed.
--out: cavi, svi and map write a .npz (ppl_gmm.load_fit); vb and nuts write netCDF .nc
  (ppl_gmm.arviz_io.load_inference_data; vb: 1000 draws of q). A path with another extension,
  in a missing or read-only directory, or naming a directory is refused before the fit.
exit codes: 0 done; 2 bad input (one line "{PROG}: error: ..." on stderr, before any fitting);
  1 the fit failed; 130 interrupted; {EXIT_BROKEN_PIPE} stdout's reader went away (e.g. | head).
"""


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = _Parser(
        prog=PROG,
        description="Gaussian mixture models the probabilistic-programming way.",
        epilog=f"Bad input gives one line '{PROG}: error: ...' on stderr and exit code 2 ('{PROG} fit --help').",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="{fit,demo,figures}")
    seed = _integer(0)
    seed_help = "seed of every random choice: any non-negative integer, the same seed gives the same bits"

    f = sub.add_parser(
        "fit",
        help="fit a CSV's numeric columns or a .npy array and print a summary",
        description="Fit a Gaussian mixture to a CSV file's numeric columns or a .npy array and print a summary.",
        epilog=_FIT_EPILOG,
        formatter_class=_HelpFormatter,
    )
    f.add_argument(
        "file",
        metavar="FILE",
        help="the data: a CSV file whose first row names the columns (or see --no-header), or a .npy file "
        "(memory-mapped, read in blocks; columns x1..xD)",
    )
    f.add_argument("-k", type=int, required=True, help="number of components K (required; see 'K' below)")
    f.add_argument(
        "--method",
        choices=METHODS,
        default="cavi",
        help="inference method: cavi (closed-form EM), svi (Pyro SVI), map (EM under the default prior), "
        "vb (closed-form variational Bayes), nuts (Pyro NUTS)",
    )
    f.add_argument(
        "--columns", nargs="+", metavar="C", help="the columns to fit, by name, e.g. a b or a,b (default: every column)"
    )
    f.add_argument(
        "--no-header",
        action="store_true",
        help="the first row is data, not column names; the columns are then named x1..xD (for --columns)",
    )
    f.add_argument(
        "--out",
        metavar="PATH",
        help="save the result: cavi/svi/map to PATH.npz (load_fit), vb/nuts to PATH.nc (netCDF InferenceData) "
        "(default: not saved)",
    )
    f.add_argument("--seed", type=seed, default=0, help=seed_help)
    f.add_argument(
        "--no-progress", action="store_true", help="no progress bar (one is shown only when stderr is a terminal)"
    )
    g = f.add_argument_group("Dask (cavi, map): the data as a Dask array chunked by rows")
    x = g.add_mutually_exclusive_group()
    x.add_argument(
        "--dask",
        type=_integer(1, MAX_WORKERS),
        metavar="N",
        help="start a local Dask cluster of N worker processes (one thread each) for the fit; closed on exit "
        "(default: no Dask)",
    )
    x.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="fit on an existing Dask cluster, e.g. tcp://host:8786; a .npy path must be readable by its workers "
        "(default: no Dask)",
    )
    g.add_argument(
        "--connect-timeout",
        type=_real(True),
        default=10.0,
        metavar="SECONDS",
        help="give up on an unreachable --scheduler after this many seconds",
    )
    g = f.add_argument_group("cavi / map / vb")
    g.add_argument(
        "--max-iter", type=_integer(0), default=1000, help="the most iterations of the ascent (0: the initial fit only)"
    )
    g.add_argument(
        "--tol", type=_real(False), default=1e-8, help="stop when |change of the objective| / N < tol (also svi)"
    )
    g.add_argument("--n-init", type=_integer(1, MAX_RESTARTS), default=1, help="restarts; the best is kept (cavi, map)")
    g.add_argument(
        "--covariance-type",
        choices=("full", "diag", "spherical", "tied"),
        default="full",
        help="covariance structure (cavi; the other methods fit full covariances)",
    )
    g.add_argument(
        "--reg-covar", type=_real(False), default=1e-6, help="added to every covariance's diagonal (cavi, svi)"
    )
    g = f.add_argument_group("svi")
    g.add_argument("--num-steps", type=_integer(1), default=2000, help="the most SVI steps")
    g.add_argument("--lr", type=_real(True), default=0.05, help="Adam's learning rate")
    g.add_argument(
        "--local-updates",
        choices=("gradient", "natural"),
        default="gradient",
        help="γ by Adam steps, or in closed form before each step (natural gradient)",
    )
    g = f.add_argument_group("map / vb / nuts (prior: default_prior(x, k))")
    g.add_argument(
        "--alpha0",
        type=_real(True),
        help="the prior's Dirichlet concentration; below 1 it switches off unneeded components "
        "(default: 1, that of default_prior)",
    )
    g.add_argument("--num-samples", type=_integer(1), default=1000, help="NUTS draws per chain, after warm-up")
    g.add_argument("--warmup-steps", type=_integer(0), default=500, help="NUTS warm-up steps per chain")
    g.add_argument("--num-chains", type=_integer(1, MAX_RESTARTS), default=1, help="NUTS chains, run one after another")
    f.set_defaults(run=_cmd_fit)

    d = sub.add_parser(
        "demo",
        help="SVI vs CAVI on the shipped Old Faithful data",
        description="CAVI, plain SVI and natural-gradient SVI on Old Faithful (K = 2): one table.",
        formatter_class=_HelpFormatter,
    )
    d.add_argument("--seed", type=seed, default=0, help=seed_help)
    d.add_argument("--num-steps", type=_integer(1), default=3000, help="plain SVI steps")
    d.add_argument("--natural-steps", type=_integer(0), default=200, help="natural-gradient SVI steps (0: skip)")
    d.add_argument(
        "--no-progress", action="store_true", help="no progress bar (one is shown only when stderr is a terminal)"
    )
    d.set_defaults(run=_cmd_demo)

    fg = sub.add_parser(
        "figures",
        help="regenerate the figures (byte-identical on re-run)",
        description="Regenerate the README's figures from fixed seeds (byte-identical on re-run).",
        formatter_class=_HelpFormatter,
    )
    fg.add_argument("--out", default="figures", metavar="DIR", help="output directory, created if missing")
    fg.add_argument("--quick", action="store_true", help="fewer steps and draws (for CI)")
    fg.add_argument("--only", nargs="+", metavar="NAME", help="only these figures, see --list (default: all)")
    fg.add_argument("--list", action="store_true", help="list the figures and exit")
    fg.set_defaults(run=_cmd_figures)
    return p


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _silence(stream) -> None:
    """After a broken pipe: point the stream's descriptor at /dev/null, so that the interpreter's
    final flush does not fail again (the recipe of the Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # not a real file (captured in a test)
        pass


def _one_line_warnings(previous: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints the package's warnings (:data:`ONE_LINE_WARNINGS`)
    as one line ``ppl-gmm: warning: ...`` on stderr and hands any other to ``previous``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, ONE_LINE_WARNINGS):
            _report(f"{PROG}: warning: {_one_line(message)}")
        else:
            previous(message, category, filename, lineno, file, line)

    return show


def _report(message: str) -> None:
    try:
        print(message, file=sys.stderr)
    except BrokenPipeError:
        _silence(sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input, 1 failure, 130 interrupted,
    141 stdout's reader went away)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
            warnings.showwarning = _one_line_warnings(warnings.showwarning)  # restored by catch_warnings
            code = _main(argv)
        sys.stdout.flush()  # a broken pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        _silence(sys.stdout)
        return EXIT_BROKEN_PIPE


def _main(argv) -> int:
    debug = bool(os.environ.get("PPL_GMM_DEBUG"))
    try:
        args = _parser().parse_args(argv)
        return args.run(args)
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        _report(f"{PROG}: interrupted")
        return 130
    except BrokenPipeError:
        raise
    except (CliError, ValueError, TypeError, FloatingPointError) as err:
        if debug:
            raise
        _report(f"{PROG}: error: {_one_line(err)}")
        return 2
    except Exception as err:  # a bug or a failed fit: still one line, and a way to see more
        if debug:
            raise
        _report(f"{PROG}: error: {type(err).__name__}: {_one_line(err)} (set PPL_GMM_DEBUG=1 for the traceback)")
        return 1
