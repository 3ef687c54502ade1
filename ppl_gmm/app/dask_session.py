"""The command line's Dask session: ``--dask N`` (a local cluster) or ``--scheduler ADDRESS``.

``--dask N`` starts ``distributed.LocalCluster(n_workers=N, processes=True, threads_per_worker=1)``
(no dashboard; each worker process runs one torch/OpenMP thread, ``distributed``'s default
``nanny.pre-spawn-environ``), ``--scheduler ADDRESS`` connects a ``distributed.Client`` to an
existing scheduler (``tcp://host:8786``; refused after ``timeout`` seconds when nobody answers).
The client becomes Dask's default scheduler, so the fit's per-chunk passes and the source's
validation pass run on the workers. :func:`dask_client` closes the client and the cluster it
started on the way out: on success, on error and on Ctrl-C.

``dask`` and ``distributed`` are imported only here, only when asked for (the ``dask`` extra).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from .csv_input import CliError

__all__ = ["DASK_METHODS", "dask_client", "check_dask_method"]

#: The methods that run on a Dask array (the closed-form fits over row chunks).
DASK_METHODS = ("cavi", "map", "vb")
#: Seconds allowed to close the client and the cluster.
_CLOSE_TIMEOUT = 10


def check_dask_method(method: str, flag: str) -> None:
    """Refuse, before any work, a method that cannot run on a Dask array."""
    if method not in DASK_METHODS:
        raise CliError(
            f"{flag} runs --method {', '.join(DASK_METHODS[:-1])} or {DASK_METHODS[-1]} only (the closed-form fits "
            "over row chunks); "
            f"--method {method} needs the data in memory: drop {flag}"
        )


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise CliError("--dask and --scheduler need dask.distributed: pip install 'ppl-gmm[dask]'") from None
    return distributed


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, timeout: float = 10.0) -> Iterator[Any]:
    """A ``distributed.Client`` on a new local cluster of ``workers`` processes, or connected to
    ``scheduler``; closed (with the cluster) when the block ends, however it ends."""
    if (workers is None) == (scheduler is None):
        raise ValueError("give exactly one of workers and scheduler")
    distributed = _distributed()
    cluster = None
    try:
        if workers is not None:
            cluster = distributed.LocalCluster(
                n_workers=workers,
                processes=True,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            client = distributed.Client(cluster)
        else:
            try:
                client = distributed.Client(scheduler, timeout=timeout)
            except (OSError, TimeoutError, ValueError, TypeError) as err:
                why = " ".join(str(err).split()) or type(err).__name__
                raise CliError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({why})") from None
    except BaseException:
        if cluster is not None:
            _close(cluster)
        raise
    try:
        yield client
    finally:
        _close(client)
        if cluster is not None:
            _close(cluster)


def _close(obj: Any) -> None:
    """Close a client or cluster, quietly (its own errors must not hide the fit's)."""
    with contextlib.suppress(Exception):
        obj.close(timeout=_CLOSE_TIMEOUT)
