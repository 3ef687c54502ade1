"""The ``ppl-gmm`` argument parser and its help texts; ``cli`` runs what it parses.

:func:`build_parser` builds the sub-commands fit, demo and figures. Bad input never reaches a fit:
``_Parser.error`` raises :class:`~ppl_gmm.app.csv_input.CliError` (one line on stderr and exit code
2 in ``cli.main``, no usage dump), and the option types ``_integer`` and ``_real`` refuse a bad
number, naming the option. ``_HelpFormatter`` ends every option's help with its default.

The documentation's command-line page is the ``--help`` output of this parser (``docs/conf.py``,
``_write_cli_help``, writes it into ``docs/_generated/`` at build time): a help text changed here
changes that page, and nothing else needs editing.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from typing import NoReturn

from ..core.validation import COVARIANCE_TYPES
from ..core.vb_posterior import WEIGHT_PRIORS
from .csv_input import MAX_INPUT_BYTES, MAX_LINE_CHARS, CliError

__all__ = [
    "build_parser",
    "METHODS",
    "COVARIANCE_METHODS",
    "WEIGHT_PRIOR_METHODS",
    "MAX_RESTARTS",
    "MAX_WORKERS",
    "EXIT_BROKEN_PIPE",
    "PROG",
]

METHODS = ("cavi", "svi", "map", "vb", "nuts")
#: --covariance-type: the methods that fit every type (svi and nuts fit full covariances only).
COVARIANCE_METHODS = ("cavi", "map", "vb")
#: --weight-prior (``fit_vb``'s ``weight_prior``, one of WEIGHT_PRIORS): vb only; map and nuts use the Dirichlet.
WEIGHT_PRIOR_METHODS = ("vb",)
#: The most restarts (--n-init) and chains (--num-chains): their seeds are spawned up front.
MAX_RESTARTS = 10_000
#: The exit code when stdout's reader has gone (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141
#: The most local Dask workers (--dask N).
MAX_WORKERS = 1024
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


_FIT_EPILOG = f"""\
input: a UTF-8 CSV file (a byte-order mark is dropped), a regular file of at most {MAX_INPUT_BYTES >> 30} GiB
  with lines of at most {MAX_LINE_CHARS:,} characters. Its first row names the columns; a first row of
  numbers only is refused as a header: pass --no-header to read it as data, columns x1..xD.
  Or a .npy file (a name ending in .npy, or numpy's magic bytes) of any size: float32, float64 or
  integers, (N,) or (N, D) in C order, columns x1..xD. cavi, map and vb memory-map it and read it
  in blocks (NaN/inf refused, naming the row, before the fit); svi and nuts read it whole
  (at most {MAX_INPUT_BYTES >> 30} GiB).
dask: --dask N or --scheduler ADDRESS fit the data (CSV or .npy) as a Dask array chunked by rows,
  where the chunks live; cavi, map and vb only. A .npy is read by the workers from its path.
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


def build_parser(commands: Mapping[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """The ``ppl-gmm`` parser; ``commands`` maps "fit", "demo" and "figures" to the function each
    runs (``args.run``), so that this module needs nothing of ``cli``."""
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
    g = f.add_argument_group("Dask (cavi, map, vb): the data as a Dask array chunked by rows")
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
        choices=COVARIANCE_TYPES,
        default="full",
        help="covariance structure (cavi, map, vb; svi and nuts fit full covariances and refuse another)",
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
        help="the weight prior's concentration (Dirichlet, or the Dirichlet process of --weight-prior "
        "dirichlet_process); below 1 it switches off unneeded components (default: 1, that of default_prior)",
    )
    g.add_argument(
        "--weight-prior",
        choices=WEIGHT_PRIORS,
        default="dirichlet",
        help="vb only: the prior on the weights, Dir(alpha0 1_K), or the Dirichlet process truncated at K "
        "sticks with concentration --alpha0 (map and nuts: Dirichlet)",
    )
    g.add_argument("--num-samples", type=_integer(1), default=1000, help="NUTS draws per chain, after warm-up")
    g.add_argument("--warmup-steps", type=_integer(0), default=500, help="NUTS warm-up steps per chain")
    g.add_argument("--num-chains", type=_integer(1, MAX_RESTARTS), default=1, help="NUTS chains, run one after another")
    f.set_defaults(run=commands["fit"])

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
    d.set_defaults(run=commands["demo"])

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
    fg.set_defaults(run=commands["figures"])
    return p
