"""The ppl-gmm command line (ppl_gmm.app.cli) and the demo: good runs print a table and round-trip
through --out; every bad input gives exit code 2 and exactly one line on stderr, never a traceback."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.app import cli
from ppl_gmm.app.demo import compare_svi_cavi
from ppl_gmm.results.text import format_comparison, format_result


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one torch thread (two processes of ``pytest -n 2`` share two cores)."""
    from ppl_gmm.core.threads import limited_threads

    with limited_threads():
        yield


@pytest.fixture
def faithful_csv(tmp_path):
    path = tmp_path / "faithful.csv"
    x = pg.datasets.load_old_faithful()
    lines = ["eruptions,waiting"] + [f"{float(a)!r},{float(b)!r}" for a, b in x]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_prints_table_and_out_round_trips(faithful_csv, tmp_path, capsys):
    out_path = tmp_path / "fit.npz"
    code, out, err = run(["fit", faithful_csv, "-k", 2, "--out", out_path, "--no-progress"], capsys)
    assert code == 0, err
    for text in (
        "method: cavi",
        "weight",
        "mean eruptions",
        "mean waiting",
        "covariances",
        "ELBO (eq. 18)",
        "log-likelihood (eq. 26)",
        "iterations:",
        "converged: True",
        f"saved to {out_path}",
    ):
        assert text in out
    loaded = pg.load_fit(out_path)
    ref = pg.fit_cavi(pg.datasets.load_old_faithful(), 2, seed=0)  # the CLI's default seed is 0
    assert loaded.params.allclose(ref.params, rtol=0, atol=0)
    assert torch.equal(loaded.elbo, ref.elbo) and loaded.n_iter == ref.n_iter
    assert f"{float(ref.elbo[-1]):.10g}" in out


def test_read_csv_matches_the_shipped_loader(faithful_csv):
    names, x = cli.read_csv(faithful_csv)
    assert names == ["eruptions", "waiting"]
    np.testing.assert_array_equal(x, pg.datasets.load_old_faithful())
    names, x = cli.read_csv(faithful_csv, ["waiting,eruptions"])
    assert names == ["waiting", "eruptions"]
    np.testing.assert_array_equal(x, pg.datasets.load_old_faithful()[:, ::-1])


def test_fit_one_column_is_one_dimensional(faithful_csv, capsys):
    code, out, err = run(["fit", faithful_csv, "-k", 2, "--columns", "waiting", "--no-progress", "--seed", 3], capsys)
    assert code == 0, err
    assert "D = 1" in out and "mean waiting" in out
    ref = pg.fit_cavi(pg.datasets.load_old_faithful()[:, 1], 2, seed=3)
    assert f"{float(ref.elbo[-1]):.10g}" in out


def test_fit_svi_and_bayesian_methods(faithful_csv, tmp_path, capsys):
    out_path = tmp_path / "svi.npz"
    code, out, err = run(
        [
            "fit",
            faithful_csv,
            "-k",
            2,
            "--method",
            "svi",
            "--num-steps",
            30,
            "--local-updates",
            "natural",
            "--out",
            out_path,
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert "method: svi" in out and pg.load_fit(out_path).method == "svi"
    code, out, err = run(["fit", faithful_csv, "-k", 2, "--method", "map", "--no-progress"], capsys)
    assert code == 0, err
    assert "method: map" in out
    code, out, err = run(["fit", faithful_csv, "-k", 3, "--method", "vb", "--alpha0", 0.001, "--no-progress"], capsys)
    assert code == 0, err
    assert "method: vb" in out and "E[π_k]" in out


BAD_CSV = {
    "non_numeric": ("a,b\n1,2\n3,abc\n", "column 'b' is not numeric: line 3 has 'abc'"),
    "ragged": ("a,b\n1,2\n3\n", "line 3 has 1 fields but the header has 2"),
    "missing_empty": ("a,b\n1,2\n3,\n4,5\n", "missing value in column 'b' at line 3"),
    "missing_na": ("a,b\n1,NA\n3,4\n", "missing value in column 'b' at line 2"),
    "infinite": ("a,b\n1,inf\n3,4\n", "non-finite value"),
    "empty": ("", "the file is empty"),
    "header_only": ("a,b\n", "no data rows"),
    "quote": ('a,"b\n1,2\n', "malformed CSV"),
    "duplicate_header": ("a,a\n1,2\n", "twice"),
    "unnamed_column": ("a,\n1,2\n", "has no name"),
}


def _one_error_line(code, err, expect):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ppl-gmm: error: ")
    assert expect in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_malformed_csv(case, tmp_path, capsys):
    text, expect = BAD_CSV[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text, encoding="utf-8")
    code, out, err = run(["fit", path, "-k", 1], capsys)
    _one_error_line(code, err, expect)
    assert out == ""


def test_unreadable_files(tmp_path, capsys):
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    cases = [(binary, "not a UTF-8 text file"), (tmp_path / "nope.csv", "no such file"), (tmp_path, "is a directory")]
    for path, expect in cases:
        code, _, err = run(["fit", path, "-k", 2], capsys)
        _one_error_line(code, err, expect)


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["-k", "x"], "invalid int value: 'x'"),
        (["-k", "0"], "-k must be at least 1"),
        (["-k", "300"], "larger than the number of data points"),
        (["-k", "2", "--method", "em"], "invalid choice: 'em'"),
        (["-k", "2", "--columns", "speed"], "no column 'speed'"),
        ([], "required: -k"),
        (["-k", "2", "--bogus"], "unrecognized arguments: --bogus"),
        (["-k", "2", "--max-iter", "-1"], "argument --max-iter: must be a non-negative integer, got -1"),
    ],
)
def test_bad_flags(argv, expect, faithful_csv, capsys):
    code, _, err = run(["fit", faithful_csv, *argv, "--no-progress"], capsys)
    _one_error_line(code, err, expect)


def test_bad_commands(capsys):
    code, _, err = run(["transmogrify"], capsys)
    _one_error_line(code, err, "invalid choice: 'transmogrify'")
    code, _, err = run([], capsys)
    _one_error_line(code, err, "required")
    code, _, err = run(["figures", "--only", "nonexistent"], capsys)
    _one_error_line(code, err, "unknown figure 'nonexistent'")


def test_help_and_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"ppl-gmm {pg.__version__}"
    code, out, _ = run(["fit", "--help"], capsys)
    assert code == 0 and "--method" in out and "--columns" in out
    code, out, _ = run(["figures", "--list"], capsys)
    assert code == 0 and "svi_vs_cavi_elbo.png" in out


def test_python_dash_m_process(tmp_path):
    """A real process: ``python -m ppl_gmm`` exits 2 with one line and no traceback."""
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,x\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "ppl_gmm", "fit", str(bad), "-k", "1"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"ppl-gmm: error: {bad}: column 'b' is not numeric: line 2 has 'x'; choose numeric columns with --columns"
    ]


def test_console_script_entry_point_resolves():
    """``pip install`` writes the ``ppl-gmm`` script from pyproject's [project.scripts]: its target
    must import and be the command line's ``main``."""
    import importlib
    from pathlib import Path

    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    target = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["scripts"]["ppl-gmm"]
    module, _, attr = target.partition(":")
    assert getattr(importlib.import_module(module), attr) is cli.main


def test_demo_table(capsys):
    code, out, err = run(["demo", "--num-steps", 40, "--natural-steps", 20, "--no-progress"], capsys)
    assert code == 0, err
    assert "Old Faithful: N = 272, D = 2, K = 2" in out
    for label in ("CAVI (closed form)", "SVI (Adam on Θ and γ)", "SVI (natural-gradient γ)", "rel. diff", "seconds"):
        assert label in out


def test_comparison_numbers():
    x = pg.datasets.load_old_faithful()
    cmp = compare_svi_cavi(x, 2, seed=1, num_steps=30, natural_steps=0)
    assert list(cmp.fits) == ["CAVI (closed form)", "SVI (Adam on Θ and γ)"]
    cavi, svi = cmp.fits.values()
    ref = pg.fit_cavi(x, 2, seed=1, tol=1e-10)
    assert float(cavi.elbo[-1]) == float(ref.elbo[-1])
    rows = cmp.rows()
    assert rows[0]["rel_diff"] == 0.0 and rows[0]["d_mu"] == 0.0
    perm = pg.align(cavi, svi)
    expected_mu = float((svi.params.mu[perm] - cavi.params.mu).abs().max())
    assert rows[1]["d_mu"] == pytest.approx(expected_mu, rel=1e-12)
    assert rows[1]["rel_diff"] == pytest.approx(abs(float(svi.elbo[-1] - cavi.elbo[-1])) / abs(float(cavi.elbo[-1])))
    assert rows[1]["n_iter"] == 30
    text = format_comparison(cmp, seconds=False)
    assert "seconds" not in text and f"{rows[1]['elbo']:.6f}" in text


# --- --covariance-type (cavi, map, vb) and --weight-prior (vb) -------------------------------------
SHIPPED_FAITHFUL = Path(pg.datasets.__file__).parent / "data" / "old_faithful.csv"


def _vb_draws(path) -> dict:
    post = pg.arviz_io.load_inference_data(path).posterior
    return {name: post[name].values for name in ("alpha", "mu", "cov")}


def _assert_draws_equal(got: dict, want: pg.VBFit):
    """The --out netCDF holds 1000 draws of q (seed 0): those of ``want``'s posterior, to 1e-10."""
    ref = want.to_arviz(num_samples=1000, seed=0).posterior
    for name, values in got.items():
        np.testing.assert_allclose(values, ref[name].values, rtol=1e-10, atol=0)


def test_map_covariance_type_diag_is_fit_map_of_that_type(tmp_path, capsys):
    """--method map --covariance-type diag on the shipped CSV is ``fit_map(x, 2, covariance_type="diag")``;
    the full fit differs (the option is not ignored)."""
    out_path = tmp_path / "map.npz"
    argv = ["fit", SHIPPED_FAITHFUL, "-k", 2, "--method", "map", "--covariance-type", "diag", "--no-progress"]
    code, out, err = run([*argv, "--out", out_path], capsys)
    assert code == 0, err
    x = pg.datasets.load_old_faithful()
    want = pg.fit_map(x, 2, covariance_type="diag", seed=0)
    got = pg.load_fit(out_path)
    assert got.covariance_type == "diag" and got.method == "map" and got.n_iter == want.n_iter
    for name in ("alpha", "mu", "cov"):
        np.testing.assert_allclose(getattr(got.params, name), getattr(want.params, name), rtol=1e-10, atol=0)
    np.testing.assert_allclose(got.elbo, want.elbo, rtol=1e-10)
    assert float(got.params.cov[:, 0, 1].abs().max()) == 0.0  # diagonal covariances
    full = pg.fit_map(x, 2, seed=0)
    assert not np.allclose(full.params.cov, want.params.cov, rtol=1e-3)
    assert "covariance: diag" in out


@pytest.mark.parametrize(
    "extra, k, kwargs",
    [
        (["--covariance-type", "diag"], 2, {"covariance_type": "diag"}),
        (["--weight-prior", "dirichlet_process", "--alpha0", 0.1], 3, {"weight_prior": "dirichlet_process"}),
        (
            ["--weight-prior", "dirichlet_process", "--covariance-type", "spherical"],
            3,
            {"weight_prior": "dirichlet_process", "covariance_type": "spherical"},
        ),
    ],
    ids=["diag", "dirichlet_process", "dp_spherical"],
)
def test_vb_covariance_type_and_weight_prior_are_fit_vb_with_them(extra, k, kwargs, tmp_path, capsys):
    """--method vb with --covariance-type / --weight-prior (and --alpha0, the DP's concentration) on the
    shipped CSV: the printed summary and the --out draws are those of ``fit_vb`` with the same
    arguments (to 1e-10), and differ from the default fit's (the options are not ignored)."""
    out_path = tmp_path / "vb.nc"
    argv = ["fit", SHIPPED_FAITHFUL, "-k", k, "--method", "vb", "--no-progress", "--out", out_path, *extra]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    x = pg.datasets.load_old_faithful()
    alpha0 = float(extra[extra.index("--alpha0") + 1]) if "--alpha0" in extra else 1.0
    prior = dataclasses.replace(pg.default_prior(x, k), alpha0=alpha0)
    want = pg.fit_vb(x, k, prior, seed=0, **kwargs)
    assert out.splitlines()[1:-1] == format_result(want, ["eruptions", "waiting"]).splitlines()
    got = _vb_draws(out_path)
    _assert_draws_equal(got, want)
    default = pg.fit_vb(x, k, prior, seed=0).to_arviz(num_samples=1000, seed=0).posterior
    assert not np.allclose(got["cov"], default["cov"].values, rtol=1e-3)
    covariance = kwargs.get("covariance_type", "full")
    assert f"covariance: {covariance}" in out
    if kwargs.get("weight_prior") == "dirichlet_process":
        assert want.posterior.stick_b is not None
        assert f"weight prior: Dirichlet process (K sticks), concentration alpha0 = {alpha0:g}" in out
        assert "sticks Beta(a_k, b_k)" in out and "Dirichlet alpha_k" not in out
    else:
        assert "weight prior: Dirichlet, concentration alpha0 = 1" in out and "Dirichlet alpha_k" in out
