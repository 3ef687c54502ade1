"""Map row ranges to statistics, reduce them in order: the package's own worker threads and Dask.

A pass of a closed-form fit (``_engine``) is a sum over rows of per-row terms, so it splits into
*tasks* (fixed ranges of rows, or the chunks of a Dask array) whose statistics are added. Both
maps below return the tasks' results **in task order**, and the caller adds them in that order,
so the answer depends only on how the rows are split into tasks — never on the scheduling or on
the number of threads or Dask workers. (``_engine`` splits in-memory, ``.npy`` and sliced data
into tasks of a fixed number of rows: the same bits for every thread count.)

Threads (issue 10, item 5). OpenMP's worker threads spin-wait at the end of each parallel region;
a blocked pass has thousands of small regions per iteration, and on a machine whose cores are
busy the spinning threads steal the time of the one that has work (measured: ``fit_cavi`` at
N = 2e6, D = 2, K = 5 took 137 s instead of 12 s). :func:`map_in_order` instead runs whole tasks on
a ``concurrent.futures.ThreadPoolExecutor`` of T workers, each with **one** torch thread (torch
releases the GIL inside its kernels, so T workers use T cores): a worker that waits simply
blocks. Torch's thread count is process-global, so it is set to 1 for the duration of the map
and restored afterwards (``core.threads.limited_threads``); a torch computation that another
thread of the same process runs meanwhile also runs on one thread, and if it changes the count
itself the count it found is restored when the map ends.

Dask (issue 10, item 2). :func:`dask_map_in_order` runs the per-chunk function where the chunks
live — on the threaded scheduler, or on the workers of a ``dask.distributed`` cluster when a
``Client`` is active — with the small per-pass arguments shared by every task (one graph key,
scattered once), and only the per-chunk statistics (O(K·D²) numbers) travel back.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from ..core.threads import limited_threads
from ..core.validation import check_int

__all__ = ["map_in_order", "dask_map_in_order", "resolve_threads"]

T = TypeVar("T")
R = TypeVar("R")
W = TypeVar("W")


def resolve_threads(threads: Any) -> int:
    """The number of worker threads of a fit: ``threads`` (an int ≥ 1, checked), or torch's thread
    count now (``None``)."""
    return torch.get_num_threads() if threads is None else check_int(threads, "threads", 1)


def map_in_order(fn: Callable[[T, W], R], tasks: Sequence[T], threads: int, workspace: Callable[[], W]) -> list[R]:
    """``[fn(task, ws) for task in tasks]``, computed by up to ``threads`` worker threads.

    Each worker owns a workspace made by ``workspace()`` (at most ``threads`` are made; a task
    borrows one for its whole run), so no buffer is shared between tasks running at once. One
    task, or one thread, runs in the calling thread with no pool. The results are in task order
    whatever the scheduling."""
    workers = max(1, min(threads, len(tasks)))
    if workers == 1:
        ws = workspace()
        return [fn(t, ws) for t in tasks]
    spare: queue.SimpleQueue[W] = queue.SimpleQueue()
    for _ in range(workers):
        spare.put(workspace())

    def run(task: T) -> R:
        if torch.get_num_threads() != 1:  # a new thread: one torch thread (the caller restores the count)
            torch.set_num_threads(1)
        ws = spare.get()
        try:
            return fn(task, ws)
        finally:
            spare.put(ws)

    with limited_threads(), ThreadPoolExecutor(workers, thread_name_prefix="ppl_gmm") as pool:
        return list(pool.map(run, tasks))  # in task order


def dask_map_in_order(fn: Callable[..., R], shared: Any, chunks: Sequence[Sequence[Any]]) -> list[R]:
    """``[fn(shared, *chunk) for chunk in chunks]`` computed by Dask where the chunks live.

    ``chunks``: per task, the delayed chunk(s) it reads (e.g. a row chunk of the data and of the
    weights, from ``dask.array.Array.to_delayed``) or ``None``. ``shared`` (the per-pass
    parameters) becomes one graph key that every task depends on (with ``dask.distributed`` it is
    sent to each worker once). The current scheduler computes it: a ``distributed.Client`` if
    one is active, else Dask's default for arrays (threads)."""
    import dask

    shared_key = dask.delayed(shared, pure=True, traverse=False)
    tasks = [dask.delayed(fn, pure=True)(shared_key, *chunk) for chunk in chunks]
    return list(dask.compute(*tasks))
