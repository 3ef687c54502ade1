"""The ``ppl-gmm`` command line (also ``python -m ppl_gmm``).

    ppl-gmm fit FILE.csv -k K [--method {cavi,svi,map,vb,nuts}] [--columns C ...] [--no-header] [--out PATH]
    ppl-gmm fit FILE.npy -k K [--dask N | --scheduler ADDRESS] ...   a memory-mapped .npy, read in blocks
    ppl-gmm demo                      SVI vs CAVI on the shipped Old Faithful data (the main job)
    ppl-gmm figures [--out DIR] [--quick] [--only NAME ...]

The contract. Exit code 0: done. Exit code 2: bad input, reported as one line
``ppl-gmm: error: ...`` on stderr, never a traceback (set ``PPL_GMM_DEBUG=1`` to see one), and
found before any fitting starts: a bad flag or number, an option the method does not fit by
(:func:`check_method_options`: ``--covariance-type`` other than full with svi or nuts,
``--weight-prior dirichlet_process`` with another method than vb), an input that is not a regular UTF-8 CSV
file of at most 1 GiB (:data:`~ppl_gmm.app.csv_input.MAX_INPUT_BYTES`) with lines of at most
2**20 characters, a malformed CSV, a non-numeric or missing value, a first row of numbers read as a header
(use ``--no-header``), a K the data cannot support (:func:`check_k_supported`), or an ``--out``
path that cannot be written or whose extension does not match the method (:data:`OUT_SUFFIX`).
A ``.npy`` input (``npy_input``) is memory-mapped and validated by one pass over its blocks (a bad
dtype or shape, NaN/inf naming the row: exit 2); ``--dask N`` / ``--scheduler ADDRESS``
(``dask_session``) fit it, or a CSV, as a Dask array chunked by rows on a local cluster of N worker
processes or an existing one (cavi, map and vb; an unreachable scheduler: exit 2). A fit that
stopped at ``--max-iter`` before converging prints one line ``ppl-gmm: warning: ...`` on stderr
(:class:`~ppl_gmm.core.errors.ConvergenceWarning`).
Exit code 1: a fit or a figure failed on valid input (still one line). Exit code 130: interrupted.
Exit code 141 (128 + SIGPIPE, what a shell reports for a process killed by a broken pipe): the
reader of stdout went away (``ppl-gmm ... | head``); the command stops quietly.

The argument parser, its option types and its help texts are in ``parser`` (the documentation's
command-line page is its ``--help`` output); this module checks the input and runs the commands.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..core.errors import ConvergenceWarning, MultimodalityWarning
from .csv_input import MAX_INPUT_BYTES, MAX_LINE_CHARS, CliError, read_csv
from .dask_session import DASK_METHODS, check_dask_method, dask_client
from .npy_input import column_names, in_memory, is_npy, npy_dask_array, open_npy
from .parser import (
    COVARIANCE_METHODS,
    EXIT_BROKEN_PIPE,
    MAX_RESTARTS,
    METHODS,
    PROG,
    WEIGHT_PRIOR_METHODS,
    build_parser,
)

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
    "check_method_options",
]

#: The file format --out writes, by method: a ``GMMFit`` as ``.npz`` (``ppl_gmm.load_fit``), or an
#: ArviZ ``InferenceData`` as netCDF ``.nc`` (``ppl_gmm.arviz_io.load_inference_data``).
OUT_SUFFIX = {"cavi": ".npz", "svi": ".npz", "map": ".npz", "vb": ".nc", "nuts": ".nc"}
#: The package's warnings printed as one line "ppl-gmm: warning: ..." (others keep Python's format).
ONE_LINE_WARNINGS = (ConvergenceWarning, MultimodalityWarning)


# --- progress ----------------------------------------------------------------------------------
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
    For a source without --alpha0: None, so that fit_map / fit_vb build the same prior in their own pass."""
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

        return fit_vb(
            x,
            k,
            prior,
            max_iter=args.max_iter,
            tol=args.tol,
            seed=seed,
            covariance_type=args.covariance_type,
            weight_prior=args.weight_prior,
            progress=progress,
        )
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
def check_method_options(args) -> None:
    """Refuse, before any work, an option the method does not fit by: a --covariance-type other than
    full with svi or nuts (:data:`~ppl_gmm.app.parser.COVARIANCE_METHODS`), and --weight-prior
    dirichlet_process with another method than vb (:data:`~ppl_gmm.app.parser.WEIGHT_PRIOR_METHODS`)."""
    method = args.method
    if method not in COVARIANCE_METHODS and args.covariance_type != "full":
        raise CliError(
            f"--covariance-type {args.covariance_type} is for --method {', '.join(COVARIANCE_METHODS[:-1])} or "
            f"{COVARIANCE_METHODS[-1]}; --method {method} fits full covariances"
        )
    if method not in WEIGHT_PRIOR_METHODS and args.weight_prior != "dirichlet":
        has = "has no prior" if method in ("cavi", "svi") else "puts the Dirichlet Dir(alpha0 1_K) on the weights"
        raise CliError(
            f"--weight-prior {args.weight_prior} is for --method {' or '.join(WEIGHT_PRIOR_METHODS)}; "
            f"--method {method} {has}"
        )


def _cmd_fit(args) -> int:
    if args.k < 1:
        raise CliError(f"-k must be at least 1, got {args.k}")
    check_method_options(args)
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
    if args.method in DASK_METHODS:  # cavi, map, vb: read in blocks, whatever the size
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


def _parser() -> argparse.ArgumentParser:
    """The parser (``parser.build_parser``) with this module's commands."""
    return build_parser({"fit": _cmd_fit, "demo": _cmd_demo, "figures": _cmd_figures})


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
