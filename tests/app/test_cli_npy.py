"""``ppl-gmm fit FILE.npy`` (memory-mapped, read in blocks), ``--dask N`` and ``--scheduler ADDRESS``
(issue 10, item 6), and the one-line ConvergenceWarning.

Oracles: the library's in-memory fit of the same array (the CLI reads the file in blocks, or on a
Dask cluster: the in-memory vs chunked check of issue 10, to 1e-10 relative) and the CLI's own CSV
path on the same numbers. Bad input (exit 2, one line) is in ``test_cli_contract.py``."""

import dataclasses
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.app import cli
from ppl_gmm.core.sources import Source
from ppl_gmm.results.text import format_result

RTOL = 1e-10
real_fit_vb = pg.fit_vb  # the oracle, unaffected by _record_fit_vb


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one torch thread (two processes of ``pytest -n 2`` share two cores)."""
    from ppl_gmm.core.threads import limited_threads

    with limited_threads():
        yield


@pytest.fixture(scope="module")
def faithful_np():
    return np.asarray(pg.datasets.load_old_faithful(), dtype=np.float64)


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_same_params(got: pg.GMMParams, want: pg.GMMParams):
    for name in ("alpha", "mu", "cov"):
        np.testing.assert_allclose(getattr(got, name).numpy(), getattr(want, name).numpy(), rtol=RTOL, atol=0)


# --- .npy in-process ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["cavi", "map"])
def test_npy_fit_equals_the_in_memory_fit_and_saves_without_gamma(method, faithful_np, tmp_path, capsys):
    path, out = tmp_path / "faithful.npy", tmp_path / "fit.npz"
    np.save(path, faithful_np)
    code, stdout, err = run(["fit", path, "-k", 2, "--method", method, "--no-progress", "--out", out], capsys)
    assert code == 0, err
    assert err == ""
    assert f"{path}: N = 272 rows, memory-mapped, D = 2 columns (x1, x2)" in stdout
    fit = pg.load_fit(out)
    assert fit.gamma is None  # a .npy is read in blocks: no (N, K) array
    want = (pg.fit_cavi if method == "cavi" else pg.fit_map)(faithful_np, 2, seed=0)
    assert_same_params(fit.params, want.params)
    assert fit.n_iter == want.n_iter
    np.testing.assert_allclose(fit.elbo, want.elbo, rtol=RTOL)
    # the printed summary is the in-memory fit's, line for line (but for the header line's source)
    (csv := tmp_path / "faithful.csv").write_text(
        "x1,x2\n" + "".join(f"{a!r},{b!r}\n" for a, b in faithful_np.tolist())
    )
    code, csv_out, err = run(["fit", csv, "-k", 2, "--method", method, "--no-progress"], capsys)
    assert code == 0, err
    assert stdout.splitlines()[1:-1] == csv_out.splitlines()[1:]


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_npy_float32_and_integer_files(dtype, tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(8, 1, (60, 2))])
    x = (x * 10).round().astype(dtype) if dtype == np.int64 else x.astype(dtype)
    path, out = tmp_path / "x.npy", tmp_path / "fit.npz"
    np.save(path, x)
    code, _, err = run(["fit", path, "-k", 2, "--no-progress", "--out", out], capsys)
    assert code == 0, err
    want = pg.fit_cavi(torch.as_tensor(x.astype(np.float64 if dtype == np.int64 else dtype)), 2, seed=0)
    got = pg.load_fit(out).params
    tol = RTOL if dtype == np.int64 else 1e-5  # float32 data: a float32 fit
    for name in ("alpha", "mu", "cov"):
        np.testing.assert_allclose(getattr(got, name).numpy(), getattr(want.params, name).numpy(), rtol=tol)


def test_one_dimensional_npy_and_a_npy_without_the_suffix(faithful_np, tmp_path, capsys):
    """(N,) is D = 1; a file named otherwise is recognised by numpy's magic bytes."""
    path = tmp_path / "eruptions.data"
    with open(path, "wb") as fh:
        np.save(fh, faithful_np[:, 0])
    code, out, err = run(["fit", path, "-k", 2, "--no-progress", "--out", tmp_path / "f.npz"], capsys)
    assert code == 0, err
    assert "D = 1 columns (x1)" in out
    assert_same_params(pg.load_fit(tmp_path / "f.npz").params, pg.fit_cavi(faithful_np[:, 0], 2, seed=0).params)


def _record_fit_vb(monkeypatch) -> list:
    """Wrap ``fit_vb`` (the CLI imports it when it fits) to record (its data, its result)."""
    from ppl_gmm.inference import vb

    calls, real = [], vb.fit_vb

    def recording(x, *args, **kwargs):
        calls.append((x, real(x, *args, **kwargs)))
        return calls[-1][1]

    monkeypatch.setattr(vb, "fit_vb", recording)
    return calls


def assert_same_draws(path, want: pg.VBFit, seed: int = 0, rtol: float = RTOL):
    """The --out netCDF holds 1000 draws of q: those of the oracle's posterior with the same seed."""
    got = pg.arviz_io.load_inference_data(path).posterior
    ref = want.to_arviz(num_samples=1000, seed=seed).posterior
    assert set(got.data_vars) == {"alpha", "mu", "cov"}
    for name in got.data_vars:
        assert got[name].shape == ref[name].shape
        np.testing.assert_allclose(got[name].values, ref[name].values, rtol=rtol, atol=0)


@pytest.mark.parametrize("alpha0", [None, 0.5])
def test_npy_vb_is_read_in_blocks_and_equals_the_in_memory_fit(alpha0, faithful_np, tmp_path, capsys, monkeypatch):
    """--method vb memory-maps the .npy and passes it to fit_vb as a source (gamma None); the fit
    is the in-memory fit of the array (to 1e-10), and its --out .nc saves without gamma."""
    path, out = tmp_path / "faithful.npy", tmp_path / "fit.nc"
    np.save(path, faithful_np)
    calls = _record_fit_vb(monkeypatch)
    extra = [] if alpha0 is None else ["--alpha0", alpha0]
    code, stdout, err = run(["fit", path, "-k", 2, "--method", "vb", "--no-progress", "--out", out, *extra], capsys)
    assert code == 0, err
    assert err == ""
    assert f"{path}: N = 272 rows, memory-mapped, D = 2 columns (x1, x2)" in stdout
    [(x, fit)] = calls
    assert isinstance(x, Source) and x.kind == "npy"  # not an array read whole
    assert fit.gamma is None
    prior = None if alpha0 is None else dataclasses.replace(pg.default_prior(faithful_np, 2), alpha0=alpha0)
    want = real_fit_vb(faithful_np, 2, prior, seed=0)
    assert want.gamma is not None and fit.n_iter == want.n_iter
    for name in ("alpha", "beta", "m", "nu", "W"):
        np.testing.assert_allclose(getattr(fit.posterior, name), getattr(want.posterior, name), rtol=RTOL, atol=0)
    np.testing.assert_allclose(fit.elbo, want.elbo, rtol=RTOL)
    assert stdout.splitlines()[1:-1] == format_result(want, ["x1", "x2"]).splitlines()
    assert_same_draws(out, want)


def test_npy_with_an_in_memory_method_reads_it_whole(faithful_np, tmp_path, capsys):
    """svi and nuts hold the data in memory: the .npy is read whole, the fit is the array's."""
    path = tmp_path / "faithful.npy"
    np.save(path, faithful_np)
    code, stdout, err = run(["fit", path, "-k", 2, "--method", "svi", "--num-steps", 5, "--no-progress"], capsys)
    assert code == 0, err
    assert f"{path}: N = 272 rows, D = 2 columns (x1, x2)" in stdout
    want = pg.fit_svi(faithful_np, 2, num_steps=5, lr=0.05, seed=0, local_updates="gradient", tol=1e-8, reg_covar=1e-6)
    assert stdout.splitlines()[1:] == format_result(want, ["x1", "x2"]).splitlines()


# --- the ConvergenceWarning ------------------------------------------------------------------------
def test_convergence_warning_is_one_stderr_line(faithful_np, tmp_path, capsys):
    path = tmp_path / "faithful.npy"
    np.save(path, faithful_np)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, out, err = run(["fit", path, "-k", 2, "--max-iter", "2", "--no-progress"], capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ppl-gmm: warning: "), err
    assert "max_iter" in lines[0] or "iterations" in lines[0], err
    assert "converged: False" in out
    # the oracle: the library warns for the same fit (the CLI only changes how it is printed)
    with pytest.warns(pg.ConvergenceWarning):
        assert not pg.fit_cavi(faithful_np, 2, max_iter=2, seed=0).converged
    # a converged fit prints no warning; other warnings keep Python's format
    assert run(["fit", path, "-k", 2, "--no-progress"], capsys)[2] == ""


@pytest.mark.slow  # ~4 s: a fresh interpreter imports torch and pyro
def test_convergence_warning_in_a_process_is_one_line(faithful_np, tmp_path):
    path = tmp_path / "faithful.npy"
    np.save(path, faithful_np)
    proc = subprocess.run(
        [sys.executable, "-m", "ppl_gmm", "fit", path, "-k", "2", "--max-iter", "1", "--method", "map"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("ppl-gmm: warning: ") and proc.stderr.count("\n") == 1, proc.stderr


# --- Dask ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dask_local_cluster_fit_equals_the_in_memory_fit(faithful_np, tmp_path):
    """``--dask 2`` in a process of its own: a 2-worker LocalCluster started and closed by the CLI."""
    path, out = tmp_path / "faithful.npy", tmp_path / "fit.npz"
    np.save(path, faithful_np)
    proc = subprocess.run(
        [sys.executable, "-m", "ppl_gmm", "fit", path, "-k", "2", "--dask", "2", "--out", out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # no cluster log lines, no bar (stderr is not a terminal)
    assert "chunks on a local Dask cluster of 2 workers" in proc.stdout
    fit = pg.load_fit(out)
    assert fit.gamma is None
    want = pg.fit_cavi(faithful_np, 2, seed=0)
    assert_same_params(fit.params, want.params)
    np.testing.assert_allclose(fit.elbo, want.elbo, rtol=RTOL)


@pytest.mark.slow
def test_dask_local_cluster_vb_equals_the_in_memory_fit(faithful_np, tmp_path):
    """``--dask 2 --method vb``: the .npy as a Dask array (8 chunks of 34 rows) on a 2-worker
    LocalCluster; the posterior it saves (1000 draws of q) is the in-memory fit's, to 1e-9."""
    path, out = tmp_path / "faithful.npy", tmp_path / "fit.nc"
    np.save(path, faithful_np)
    proc = subprocess.run(
        [sys.executable, "-m", "ppl_gmm", "fit", path, "-k", "2", "--method", "vb", "--dask", "2", "--out", out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    assert "N = 272 rows in 8 chunks on a local Dask cluster of 2 workers" in proc.stdout
    want = pg.fit_vb(faithful_np, 2, seed=0)
    assert proc.stdout.splitlines()[1:-1] == format_result(want, ["x1", "x2"]).splitlines()
    assert_same_draws(out, want, rtol=1e-9)  # the sums in chunk order: round-off only


@pytest.mark.slow
def test_scheduler_joins_an_existing_cluster_with_csv_input(faithful_np, tmp_path, capsys):
    """``--scheduler ADDRESS`` with a CSV (the array is chunked by rows and sent to the workers),
    --method map; the cluster is the test's, and the CLI leaves it running."""
    distributed = pytest.importorskip("distributed")
    csv, out = tmp_path / "faithful.csv", tmp_path / "fit.npz"
    csv.write_text("a,b\n" + "".join(f"{a!r},{b!r}\n" for a, b in faithful_np.tolist()))
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as lc:
        code, stdout, err = run(
            ["fit", csv, "-k", 2, "--method", "map", "--scheduler", lc.scheduler_address, "--out", out], capsys
        )
        assert code == 0, err
        assert f"on the Dask scheduler {lc.scheduler_address} (2 workers)" in stdout
        assert len(lc.scheduler_info["workers"]) == 2  # still running
    fit = pg.load_fit(out)
    assert fit.gamma is None
    assert_same_params(fit.params, pg.fit_map(faithful_np, 2, seed=0).params)


@pytest.mark.slow
def test_dask_client_closes_the_cluster_on_ctrl_c():
    from distributed.core import Status

    from ppl_gmm.app.dask_session import dask_client

    with pytest.raises(KeyboardInterrupt), dask_client(workers=1) as client:
        cluster = client.cluster
        assert cluster.status == Status.running
        raise KeyboardInterrupt
    assert cluster.status == Status.closed
    assert client.status == "closed"
