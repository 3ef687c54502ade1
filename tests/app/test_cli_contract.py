"""The command line's contract under adversarial input: every bad input gives exit code 2 and
exactly one stderr line ``ppl-gmm: error: ...`` that names the problem, never a traceback, and it
is found before any fitting starts (``fit`` prints its header line just before it fits, so stdout
stays empty, and no ``--out`` file is written). Also: a closed stdout ends the command quietly,
and ``--help`` gives every option a sentence and its default."""

import argparse
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import ppl_gmm as pg
from ppl_gmm.app import cli


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one torch thread (two processes of ``pytest -n 2`` share two cores)."""
    from ppl_gmm.core.threads import limited_threads

    with limited_threads():
        yield


_ROWS = np.random.default_rng(0).normal(size=(40, 2)) + np.repeat([[0.0, 0.0], [6.0, 6.0]], 20, axis=0)
GOOD = "a,b\n" + "".join(f"{a!r},{b!r}\n" for a, b in _ROWS.tolist())


def write(tmp_path, text: str | bytes, name: str = "data.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(code, out, err, *expect):
    """Exit 2, one line naming the problem, no traceback, and no fit started."""
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ppl-gmm: error: "), err
    for text in expect:
        assert text in lines[0], lines[0]
    assert "Traceback" not in err
    assert out == "", f"a fit started: {out!r}"


def _python_m(*argv, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "ppl_gmm", *map(str, argv)], capture_output=True, text=True, timeout=120, **kwargs
    )


# --- --out ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "where, expect",
    [
        (lambda tmp: tmp / "missing" / "fit.npz", "does not exist"),
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: tmp / "adir.npz", "is a directory"),
        (lambda tmp: tmp / "data.csv" / "fit.npz", "Not a directory"),
        (lambda tmp: tmp / ("x" * 300 + ".npz"), "too long"),
        (lambda tmp: "", "the path is empty"),
    ],
    ids=["missing_dir", "directory", "directory_named_npz", "parent_is_a_file", "name_too_long", "empty"],
)
def test_out_that_cannot_be_written_is_refused_before_the_fit(where, expect, tmp_path, capsys):
    data = write(tmp_path, GOOD)
    (tmp_path / "adir.npz").mkdir()
    out = where(tmp_path)
    refused(*run(["fit", data, "-k", 2, "--no-progress", "--out", out], capsys), expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.npz", "data.csv"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_out_in_a_read_only_directory_is_refused(tmp_path, capsys):
    data = write(tmp_path, GOOD)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        refused(*run(["fit", data, "-k", 2, "--out", ro / "fit.npz"], capsys), "not writable")
    finally:
        ro.chmod(stat.S_IRWXU)


def test_out_never_overwrites_the_input(tmp_path, capsys):
    data = write(tmp_path, GOOD, name="data.npz")
    refused(*run(["fit", data, "-k", 2, "--out", data], capsys), "is the input file")
    assert data.read_text() == GOOD


@pytest.mark.parametrize(
    "method, name, expect",
    [
        ("cavi", "fit.nc", "name the file with .npz, e.g. fit.npz"),
        ("svi", "fit.nc", "name the file with .npz"),
        ("map", "fit", "name the file with .npz, e.g. fit.npz"),
        ("vb", "fit.npz", "name the file with .nc, e.g. fit.nc"),
        ("nuts", "fit.npz", "name the file with .nc"),
    ],
)
def test_out_extension_must_match_the_method(method, name, expect, tmp_path, capsys):
    data = write(tmp_path, GOOD)
    refused(
        *run(["fit", data, "-k", 2, "--method", method, "--out", tmp_path / name], capsys), f"--method {method}", expect
    )
    assert not (tmp_path / name).exists()
    if method == "vb":  # the right extension writes what its reader reads
        code, out, err = run(["fit", data, "-k", 2, "--method", "vb", "--out", tmp_path / "fit.nc"], capsys)
        assert code == 0, err
        idata = pg.arviz_io.load_inference_data(tmp_path / "fit.nc")
        assert idata.posterior.sizes["draw"] == 1000


# --- the CSV file ----------------------------------------------------------------------------------
def test_byte_order_mark_is_dropped(tmp_path, capsys):
    data = write(tmp_path, b"\xef\xbb\xbf" + GOOD.encode())
    names, x = cli.read_csv(data, ["a", "b"])
    assert names == ["a", "b"]
    np.testing.assert_array_equal(x, _ROWS)
    code, out, err = run(["fit", data, "-k", 2, "--columns", "a", "b", "--no-progress"], capsys)
    assert code == 0, err
    assert "D = 2 columns (a, b)" in out


def test_header_less_numeric_csv_is_refused_and_no_header_reads_it(tmp_path, capsys):
    text = "".join(f"{a!r},{b!r}\n" for a, b in _ROWS.tolist())
    data = write(tmp_path, text)
    refused(*run(["fit", data, "-k", 2], capsys), "holds only numbers", "--no-header")
    names, x = cli.read_csv(data, header=False)
    assert names == ["x1", "x2"]
    np.testing.assert_array_equal(x, _ROWS)  # the first row is data: 40 rows, not 39
    code, out, err = run(["fit", data, "-k", 2, "--no-header", "--columns", "x2", "--no-progress"], capsys)
    assert code == 0, err
    assert "N = 40 rows, D = 1 columns (x2)" in out
    refused(*run(["fit", write(tmp_path, GOOD, "h.csv"), "-k", 2, "--no-header"], capsys), "drop --no-header")


@pytest.mark.parametrize(
    "path, expect",
    [
        ("/dev/zero", "not a regular file"),
        ("-", "standard input"),
    ],
)
def test_non_regular_input_is_refused_without_reading(path, expect):
    if not os.path.exists(path) and path != "-":
        pytest.skip(f"no {path}")
    proc = _python_m("fit", path, "-k", 2)
    refused(proc.returncode, proc.stdout, proc.stderr, expect)


def test_a_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    proc = _python_m("fit", fifo, "-k", 2)  # open() would wait for a writer
    refused(proc.returncode, proc.stdout, proc.stderr, "not a regular file")


def test_files_over_the_size_limit_are_refused_before_reading(tmp_path, capsys):
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:
        fh.truncate((1 << 30) + 1)  # sparse: no disk space, no time
    refused(*run(["fit", big, "-k", 2], capsys), "larger than the limit of 1 GiB")
    assert cli.MAX_INPUT_BYTES == 1 << 30


def test_absurdly_long_lines_are_refused(tmp_path, capsys):
    data = write(tmp_path, "a\n" + "1," * (1 << 19) + "1\n")  # 1 MiB + 1 characters
    refused(*run(["fit", data, "-k", 1], capsys), "line 2 is longer than the limit of 1 MiB")
    assert cli.MAX_LINE_CHARS == 1 << 20


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--columns", "a", "a"], "--columns names 'a' twice"),
        (["--columns", ","], "--columns names no column"),
        (["--method", "svi", "--covariance-type", "diag"], "--covariance-type diag is for --method cavi, map or vb"),
        (["--method", "nuts", "--covariance-type", "tied"], "--method nuts fits full covariances"),
        (["--method", "map", "--weight-prior", "dirichlet_process"], "--weight-prior dirichlet_process is for"),
        (["--method", "nuts", "--weight-prior", "dirichlet_process"], "--method nuts puts the Dirichlet"),
        (["--weight-prior", "dirichlet_process"], "--method vb; --method cavi has no prior"),
        (["--method", "svi", "--weight-prior", "dirichlet_process"], "--method svi has no prior"),
        (["--method", "vb", "--weight-prior", "dp"], "argument --weight-prior: invalid choice: 'dp'"),
    ],
    ids=["cols_twice", "cols_none", "svi_diag", "nuts_tied", "map_dp", "nuts_dp", "cavi_dp", "svi_dp", "bad_choice"],
)
def test_column_and_covariance_choices(argv, expect, tmp_path, capsys):
    data = write(tmp_path, GOOD)
    refused(*run(["fit", data, "-k", 2, "--no-progress", *argv], capsys), expect)


@pytest.mark.parametrize(
    "argv",
    [["--method", "svi", "--covariance-type", "diag"], ["--method", "map", "--weight-prior", "dirichlet_process"]],
)
def test_method_options_are_refused_before_the_input_is_read(argv, tmp_path, capsys):
    """The method/option mismatch is found first: a missing input file and an --out are not looked at."""
    out = tmp_path / "fit.npz"
    code, stdout, err = run(["fit", tmp_path / "missing.csv", "-k", 2, "--out", out, *argv], capsys)
    refused(code, stdout, err, argv[2])
    assert "missing.csv" not in err and not out.exists()


def test_data_without_a_default_prior_are_refused_before_the_fit_starts(tmp_path, capsys):
    data = write(tmp_path, "a,b\n" + "".join(f"{a!r},1.5\n" for a in _ROWS[:, 0].tolist()))  # a constant column
    refused(*run(["fit", data, "-k", 2, "--method", "vb"], capsys), "covariance is singular")


# --- the .npy file and Dask (issue 10) --------------------------------------------------------------
def _npy(tmp_path, array, name="data.npy"):
    path = tmp_path / name
    np.save(path, array)
    return path


_LATE_NAN = np.vstack([_ROWS] * 3000)  # 120,000 rows: more than one block of the validation pass
_LATE_NAN[-2, 1] = np.nan


@pytest.mark.parametrize(
    "array, extra, expect",
    [
        (np.array(["1", "2", "3"]), [], ["holds strings", "float32, float64 or an integer"]),
        (_ROWS.astype(np.complex128), [], ["complex"]),
        (_ROWS.astype(bool), [], ["booleans"]),
        (np.zeros((4, 2, 2)), [], ["3-D", "(N, D)"]),
        (np.zeros((0, 2)), [], ["empty", "N = 0"]),
        (np.asfortranarray(_ROWS), [], ["Fortran", "C order"]),
        (_LATE_NAN, [], ["NaN or infinite", "119998"]),
        (_ROWS, ["--columns", "x1"], ["--columns is for CSV input"]),
        (_ROWS, ["--no-header"], ["--no-header is for CSV input"]),
        (_ROWS, ["-k", "40"], ["-k 40 needs more than 40 distinct rows", "N = 40"]),
    ],
    ids=["strings", "complex", "bool", "3d", "no_rows", "fortran", "nan_in_a_late_block", "columns", "no_header", "k"],
)
def test_bad_npy_is_refused_before_the_fit(array, extra, expect, tmp_path, capsys):
    argv = ["fit", _npy(tmp_path, array), "-k", 2, "--no-progress", "--out", tmp_path / "fit.npz", *extra]
    refused(*run(argv, capsys), *expect)
    assert not (tmp_path / "fit.npz").exists()


def test_npy_that_is_not_npy_is_refused(tmp_path, capsys):
    refused(*run(["fit", write(tmp_path, GOOD, "data.npy"), "-k", 2], capsys), "data.npy", "not a readable .npy")
    with open(tmp_path / "x.npz", "wb") as fh:
        np.savez(fh, a=_ROWS)
    bad = tmp_path / "archive.npy"
    bad.write_bytes((tmp_path / "x.npz").read_bytes())
    refused(*run(["fit", bad, "-k", 2], capsys), "archive.npy", ".npy")
    refused(*run(["fit", _npy(tmp_path, np.array([{"a": 1}], dtype=object)), "-k", 2], capsys), "data.npy")


def test_npy_too_large_for_an_in_memory_method(tmp_path, capsys, monkeypatch):
    """svi/nuts read a .npy whole: above CSV's limit they are refused, naming cavi, map and vb."""
    from ppl_gmm.app import npy_input

    monkeypatch.setattr(npy_input, "MAX_INPUT_BYTES", 100)
    refused(
        *run(["fit", _npy(tmp_path, _ROWS), "-k", 2, "--method", "nuts"], capsys),
        "--method nuts holds the data in memory",
        "640 bytes",
        "--method cavi, map or vb",
    )


@pytest.mark.parametrize(
    "extra, expect",
    [
        (["--dask", "0"], ["--dask", "must be an integer >= 1, got 0"]),
        (["--dask", "-3"], ["--dask", ">= 1"]),
        (["--dask", "two"], ["--dask", "invalid int value"]),
        (["--dask", "2", "--scheduler", "tcp://127.0.0.1:8786"], ["not allowed with"]),
        (["--dask", "2", "--method", "svi"], ["--dask runs --method cavi, map or vb only", "--method svi needs"]),
        (["--scheduler", "tcp://127.0.0.1:8786", "--method", "nuts"], ["--scheduler runs", "--method nuts"]),
        (["--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "0"], ["--connect-timeout", "> 0"]),
    ],
    ids=["zero", "negative", "word", "both", "svi", "nuts", "timeout"],
)
def test_bad_dask_options_are_refused_before_any_cluster_starts(extra, expect, tmp_path, capsys):
    refused(*run(["fit", _npy(tmp_path, _ROWS), "-k", 2, *extra], capsys), *expect)


def test_unreachable_scheduler_is_one_line(tmp_path, capsys):
    """Nobody listens on port 9 (discard): the connection is refused until the timeout."""
    pytest.importorskip("distributed")
    argv = ["fit", _npy(tmp_path, _ROWS), "-k", 2, "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "0.5"]
    refused(*run(argv, capsys), "--scheduler tcp://127.0.0.1:9: cannot connect to a Dask scheduler")
    refused(*run([*argv[:-4], "--scheduler", "not an address"], capsys), "--scheduler not an address")


# --- K -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, argv, expect",
    [
        ("a\n1\n2\n3\n", ["-k", 3], "-k 3 needs more than 3 distinct rows, but the data have 3 distinct rows"),
        ("a,b\n" + "1,2\n3,4\n" * 5, ["-k", 2], "the data have 2 distinct rows among N = 10"),
        ("a,b\n" + "1,2\n3,4\n" * 5, ["-k", 2, "--method", "vb"], "the data have 2 distinct rows among N = 10"),
        ("a,b\n1,2\n3,5\n4,1\n7,7\n2,9\n", ["-k", 2], "needs at least 6 distinct rows (K (D + 1)"),
        ("a,b\n1,2\n3,5\n4,1\n7,7\n2,9\n", ["-k", 2, "--method", "svi"], "--method vb or map"),
        ("a,b\n1,2\n3,5\n4,1\n", ["-k", 2, "--covariance-type", "tied"], "needs at least 4 distinct rows (K + D"),
        ("a,b,c\n1,2,3\n3,5,1\n4,1,1\n", ["-k", 1, "--method", "map"], "at least D + 1 = 4 distinct rows"),
    ],
    ids=["k_equals_n", "duplicates", "duplicates_vb", "cavi_full", "svi_full", "cavi_tied", "prior_needs_d_plus_1"],
)
def test_k_the_data_cannot_support_is_refused_before_the_fit(text, argv, expect, tmp_path, capsys):
    refused(*run(["fit", write(tmp_path, text), *argv, "--no-progress"], capsys), expect)


def test_small_data_refused_by_cavi_are_fitted_by_vb(tmp_path, capsys):
    data = write(tmp_path, "a,b\n1,2\n3,5\n4,1\n7,7\n2,9\n")
    refused(*run(["fit", data, "-k", 2], capsys), "--method vb or map")
    code, out, err = run(["fit", data, "-k", 2, "--method", "vb", "--no-progress"], capsys)
    assert code == 0, err
    assert "method: vb" in out


# --- option values -------------------------------------------------------------------------------
def test_seed_is_any_non_negative_integer(tmp_path, capsys):
    args = cli._parser().parse_args(["fit", "x.csv", "-k", "2", "--seed", str(2**70)])
    assert args.seed == 2**70
    data = write(tmp_path, GOOD)
    for seed, expect in [("-1", "must be a non-negative integer, got -1"), ("1.5", "invalid int value: '1.5'")]:
        for command in (["fit", data, "-k", 2], ["demo"]):
            refused(*run([*command, "--seed", seed, "--no-progress"], capsys), "argument --seed", expect)


@pytest.mark.parametrize(
    "option, value, expect",
    [
        ("--max-iter", "-3", "must be a non-negative integer, got -3"),
        ("--n-init", "0", "must be an integer >= 1"),
        ("--n-init", str(10**20), "must be at most 10000"),
        ("--tol", "nan", "must be a finite number >= 0"),
        ("--tol", "-1", "must be a finite number >= 0"),
        ("--reg-covar", "inf", "must be a finite number >= 0"),
        ("--reg-covar", "-0.5", "must be a finite number >= 0"),
        ("--num-steps", "0", "must be an integer >= 1"),
        ("--lr", "0", "must be a finite number > 0"),
        ("--lr", "nan", "must be a finite number > 0"),
        ("--alpha0", "0", "must be a finite number > 0"),
        ("--alpha0", "-1", "must be a finite number > 0"),
        ("--num-samples", "0", "must be an integer >= 1"),
        ("--warmup-steps", "-1", "must be a non-negative integer"),
        ("--num-chains", "0", "must be an integer >= 1"),
        ("--num-chains", str(10**20), "must be at most 10000"),
    ],
)
def test_numeric_options_are_checked_before_work_whatever_the_method(option, value, expect, tmp_path, capsys):
    data = write(tmp_path, GOOD)
    refused(*run(["fit", data, "-k", 2, "--no-progress", option, value], capsys), f"argument {option}", expect)


@pytest.mark.parametrize("option, value", [("--num-steps", "0"), ("--natural-steps", "-1")])
def test_demo_options_are_checked(option, value, capsys):
    refused(*run(["demo", "--no-progress", option, value], capsys), f"argument {option}")


def test_figures_out_must_be_a_directory(tmp_path, capsys):
    afile = write(tmp_path, "x")
    refused(*run(["figures", "--quick", "--out", afile], capsys), "exists and is not a directory")
    refused(*run(["figures", "--quick", "--out", afile / "sub"], capsys), "Not a directory")
    assert [p.name for p in tmp_path.iterdir()] == ["data.csv"]


# --- help ----------------------------------------------------------------------------------------
def test_help_gives_every_option_a_sentence_and_its_default(capsys):
    parser = cli._parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help.split()) >= 3, (name, action.dest)
            text = formatter._get_help_string(action)
            assert "default:" in text or action.required, (name, action.dest, text)
    code, out, _ = run(["fit", "--help"], capsys)
    assert code == 0
    for text in ("--no-header", "1 GiB", "1,048,576 characters", ".npz", ".nc", "K (D + 1)", "exit codes", "141"):
        assert text in out, text


# --- progress bars -------------------------------------------------------------------------------
def test_svi_bar_that_can_stop_early_shows_no_eta(capsys, monkeypatch):
    import functools

    from tqdm.auto import tqdm

    # redraw on every step: tqdm's default redraws at most every 0.1 s, so whether a postfix (set
    # without a redraw) is ever drawn would depend on how fast the machine runs the steps
    monkeypatch.setattr(tqdm, "__init__", functools.partialmethod(tqdm.__init__, mininterval=0, miniters=1))
    pg.fit_svi(pg.datasets.load_old_faithful(), 2, num_steps=30, tol=1e-3, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "steps (at most 30)" in err
    assert "<" not in err  # tqdm's "[elapsed<remaining, ...]": an ETA toward a bound the run may not reach
    assert "|Δ|/N=" in err


# --- a closed stdout -----------------------------------------------------------------------------
def test_broken_pipe_ends_quietly(tmp_path):
    """``ppl-gmm fit ... | head -1``: the reader goes away after one line, while the fit runs."""
    data = write(tmp_path, GOOD)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    argv = ["fit", data, "-k", 2, "--method", "svi", "--num-steps", 200, "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppl_gmm", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141  # 128 + SIGPIPE
    assert first.startswith(f"{data}: N = 40 rows")
    assert err == "", err


def test_stdout_closed_from_the_start_ends_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppl_gmm", "figures", "--list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # before the command has written anything
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert err == "", err
