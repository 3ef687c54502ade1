"""The fit-file schema (``results.fit_file``): every corrupt, foreign or hostile file is refused by
``load_fit`` with one error class, ``FitFileError``, whose message names the file and the problem.

Each corrupt file is a real saved CAVI fit rewritten with zipfile / numpy so that exactly one
thing is wrong (the untouched file loads: see the ``saved`` fixture)."""

import io
import json
import re
import warnings
import zipfile

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.results import fit_file

K, N = 2, 272  # Old Faithful, two components


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(fit, path): a CAVI fit of Old Faithful saved by ``GMMFit.save``; the file loads bit for bit."""
    fit = pg.fit_cavi(pg.datasets.load_old_faithful(), K, seed=0, max_iter=10)
    path = tmp_path_factory.mktemp("fit") / "good.npz"
    fit.save(path)
    back = pg.load_fit(path)
    assert torch.equal(back.gamma, fit.gamma) and torch.equal(back.params.cov, fit.params.cov)
    return fit, path


def _parts(path):
    """The arrays and the parsed meta of a saved fit."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {name: f[name] for name in f.files}
    return arrays, json.loads(str(arrays.pop("meta")))


def _npy(value) -> bytes:
    """``value`` as the bytes of a .npy file (bytes are taken as already encoded)."""
    if isinstance(value, bytes):
        return value
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=True)
    return buf.getvalue()


def _header_only(shape, descr="<f8", body=16) -> bytes:
    """A .npy member whose header declares ``shape`` but which holds only ``body`` bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(body)


def _write(path, members) -> None:
    """A zip archive of (name, value) members, each written as ``name.npy`` (as numpy.savez does)."""
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about duplicate names
        for name, value in members:
            zf.writestr(f"{name}.npy", _npy(value))


def _refused(path, fragment):
    """``load_fit(path)`` raises exactly FitFileError; its message names the file and ``fragment``."""
    with pytest.raises(pg.FitFileError, match=fragment) as info:
        pg.load_fit(path)
    err = info.value
    assert type(err) is pg.FitFileError and isinstance(err, ValueError)
    assert str(path) in str(err) and err.path == str(path)
    return err


def _sym(a):
    return a.update(cov=a["cov"] + np.array([[0.0, 1.0], [0.0, 0.0]]))


def _swap_rows(a):  # rows still sum to 1, but with a negative entry
    return a.update(gamma=np.concatenate([a["gamma"][:-1], [[1.5, -0.5]]]))


# (edit, fragment): edit(arrays, meta) changes the saved fit's arrays / meta in place;
# an array set to None is dropped, bytes are written as the member's raw .npy bytes.
CASES = {
    # members
    "meta missing": (lambda a, m: a.update(meta=None), "no 'meta' member"),
    "elbo missing": (lambda a, m: a.pop("elbo"), r"missing members \['elbo'\]"),  # gamma is optional
    "unknown member": (lambda a, m: a.update(extra=np.zeros(2)), r"unknown members \['extra.npy'\]"),
    "pickled meta": (lambda a, m: a.update(meta=np.array([{"format": 1}], dtype=object)), "pickled object array"),
    "pickled gamma": (lambda a, m: a.update(gamma=np.array([None] * N, dtype=object)), "'gamma' is a pickled object"),
    "huge header": (
        lambda a, m: a.update(gamma=_header_only((2**40, K))),
        r"'gamma' declares shape \(1099511627776, 2\)",
    ),
    "huge meta": (lambda a, m: a.update(meta=_header_only((), "<U10000000")), "'meta' declares shape"),
    "not npy": (lambda a, m: a.update(mu=b"not an array"), "'mu' is not a valid .npy array"),
    # dtypes
    "mixed dtypes": (lambda a, m: a.update(gamma=a["gamma"].astype(np.float32)), "share one dtype"),
    "int trace": (lambda a, m: a.update(elbo=a["elbo"].astype(np.int64)), "'elbo' has dtype int64"),
    "complex mu": (lambda a, m: a.update(mu=a["mu"].astype(np.complex128)), "'mu' has dtype complex128"),
    "float16": (lambda a, m: a.update(alpha=a["alpha"].astype(np.float16)), "'alpha' has dtype float16"),
    # shapes
    "gamma (5, 7)": (
        lambda a, m: a.update(gamma=np.full((5, 7), 1 / 7)),
        r"'gamma' has shape \(5, 7\), expected \(N, K = 2\)",
    ),
    "cov 2-D": (lambda a, m: a.update(cov=a["cov"][0]), r"'cov' has shape \(2, 2\), expected \(K = 2, D = 2, D = 2\)"),
    "trace lengths": (
        lambda a, m: a.update(log_likelihood=a["log_likelihood"][:3]),
        r"'log_likelihood' has shape \(3,\)",
    ),
    "times length": (lambda a, m: a.update(times=a["times"][:-1]), r"'times' has shape"),
    "K = 0": (lambda a, m: a.update(alpha=np.zeros(0)), "K must be at least 1"),
    # values
    "all-NaN gamma": (lambda a, m: a.update(gamma=np.full((N, K), np.nan)), f"'gamma' has {N * K} NaN/inf entries"),
    "inf elbo": (lambda a, m: a["elbo"].__setitem__(-1, np.inf), "'elbo' has 1 NaN/inf entries"),
    "alpha off simplex": (lambda a, m: a.update(alpha=a["alpha"] * 2), "'alpha' is not on the simplex"),
    "gamma off simplex": (lambda a, m: a.update(gamma=a["gamma"] * 2), r"gamma row \d+ sums to 2, not 1"),
    "negative gamma": (lambda a, m: _swap_rows(a), "finite and non-negative"),
    "asymmetric cov": (lambda a, m: _sym(a), "component 0's covariance is not symmetric"),
    "indefinite cov": (
        lambda a, m: a["cov"].__setitem__(1, -a["cov"][1]),
        "component 1's covariance is not positive def",
    ),
    "negative times": (lambda a, m: a.update(times=a["times"] - 1.0), "'times' has negative entries"),
    # meta
    "meta a list": (lambda a, m: a.update(meta=np.array("[1, 2]")), "must be a JSON object, got a JSON list"),
    "meta not JSON": (lambda a, m: a.update(meta=np.array("{format")), "'meta' is not valid JSON"),
    "meta a number": (lambda a, m: a.update(meta=np.array(3.0)), "'meta' must be a 0-d unicode string"),
    "other format": (lambda a, m: m.update(format="something else"), "not a ppl_gmm fit"),
    "future format": (lambda a, m: m.update(format="ppl_gmm.GMMFit/2"), "written by a newer ppl_gmm.*upgrade"),
    "method missing": (lambda a, m: m.pop("method"), r"missing keys \['method'\]"),
    "unknown key": (lambda a, m: m.update(extra=1), r"unknown keys \['extra'\]"),
    "method bogus": (lambda a, m: m.update(method="bogus"), "meta 'method' must be one of cavi, svi, map"),
    "n_iter lots": (lambda a, m: m.update(n_iter="lots"), "meta 'n_iter' must be a non-negative integer"),
    "n_iter bool": (lambda a, m: m.update(n_iter=True), "meta 'n_iter' must be a non-negative integer, got True"),
    "n_iter negative": (lambda a, m: m.update(n_iter=-1), "meta 'n_iter' must be a non-negative integer, got -1"),
    "converged maybe": (lambda a, m: m.update(converged="maybe"), "meta 'converged' must be true or false"),
    "seed float": (lambda a, m: m.update(seed=1.5), "meta 'seed' must be null or a non-negative integer"),
    "covariance_type bogus": (lambda a, m: m.update(covariance_type="bogus"), "meta 'covariance_type' must be one of"),
    "reg_covar NaN": (lambda a, m: m.update(reg_covar=float("nan")), "meta 'reg_covar' must be a finite number >= 0"),
    "reg_covar negative": (lambda a, m: m.update(reg_covar=-1e-6), "meta 'reg_covar' must be a finite number"),
    "info a list": (lambda a, m: m.update(info=[1]), "meta 'info' must be a JSON object"),
    "log_prior length": (lambda a, m: m.update(info={"log_prior": [0.0]}), r"info\['log_prior'\] must be a list of T"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_corrupt_archive_is_refused_naming_the_file_and_the_problem(saved, tmp_path, case):
    edit, fragment = CASES[case]
    arrays, meta = _parts(saved[1])
    edit(arrays, meta)
    arrays.setdefault("meta", np.array(json.dumps(meta)))
    path = tmp_path / "corrupt.npz"
    _write(path, [(name, value) for name, value in arrays.items() if value is not None])
    err = _refused(path, fragment)
    assert "pickle" not in str(err) or "pickled" in case  # never invite unpickling


def test_duplicate_members_are_refused(saved, tmp_path):
    arrays, meta = _parts(saved[1])
    path = tmp_path / "dup.npz"
    _write(path, [("meta", np.array(json.dumps(meta))), *arrays.items(), ("gamma", arrays["gamma"])])
    _refused(path, r"duplicate members \['gamma.npy'\]")


def test_shapes_are_checked_from_the_headers_before_any_data_is_read(saved, tmp_path, monkeypatch):
    """A hostile header cannot make load_fit allocate: only ``meta`` is read before the refusal."""
    arrays, meta = _parts(saved[1])
    arrays["gamma"] = np.full((5, 7), 1 / 7)
    path = tmp_path / "shape.npz"
    _write(path, [("meta", np.array(json.dumps(meta))), *arrays.items()])
    reads = []
    real = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda fp, **kw: reads.append(fp) or real(fp, **kw))
    _refused(path, r"'gamma' has shape \(5, 7\)")
    assert len(reads) == 1


def _netcdf(saved, path):
    from ppl_gmm.results import arviz_io

    vb = pg.fit_vb(pg.datasets.load_old_faithful(), K, seed=0, max_iter=20)  # what `ppl-gmm fit --method vb` saves
    arviz_io.save_inference_data(vb.to_arviz(num_samples=20, seed=0), path)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


# (make((fit, good_path), path), fragment): files that are not (intact) fit archives at all
FILES = {
    "missing": (lambda s, p: None, "no such file"),
    "directory": (lambda s, p: p.mkdir(), "it is a directory"),
    "empty": (lambda s, p: p.write_bytes(b""), "it is empty"),
    "npy": (
        lambda s, p: p.write_bytes(_npy(s[0].gamma.numpy())),
        r"single .npy array \(numpy.save\), not a fit archive",
    ),
    "text": (lambda s, p: p.write_text("x,y\n1,2\n3,4\n"), r"not a zip archive \(it starts with b'x,y"),
    "netCDF (VB result)": (_netcdf, "this is a netCDF file .*arviz.from_netcdf"),
    "netCDF-3": (lambda s, p: p.write_bytes(b"CDF\x01" + bytes(60)), "this is a netCDF file"),
    "truncated": (lambda s, p: p.write_bytes(s[1].read_bytes()[:-200]), "zip archive is truncated or corrupt"),
    "corrupt member": (lambda s, p: p.write_bytes(_flip(s[1].read_bytes(), 300)), "truncated or corrupt .*Bad CRC"),
}


@pytest.mark.parametrize("case", list(FILES))
def test_a_file_that_is_not_a_fit_archive_is_refused(saved, tmp_path, case):
    make, fragment = FILES[case]
    path = tmp_path / "thing.npz"
    make(saved, path)
    err = _refused(path, fragment)
    assert "pickle" not in str(err)


def test_an_unreadable_file_is_refused(saved, tmp_path, monkeypatch):
    path = tmp_path / "locked.npz"
    saved[0].save(path)
    path.chmod(0)
    if path.stat().st_mode & 0o777 == 0 and _can_read(path):  # root reads anything: simulate the refusal
        monkeypatch.setattr(fit_file, "open", _denied, raising=False)
    try:
        _refused(path, "permission denied")
    finally:
        path.chmod(0o600)


def _can_read(path) -> bool:
    try:
        with open(path, "rb"):
            return True
    except PermissionError:
        return False


def _denied(path, mode="r"):
    raise PermissionError(13, "Permission denied", str(path))


def test_save_writes_only_what_load_fit_reads(saved, tmp_path):
    """A fit that the schema refuses is not written; MAP and SVI fits (info, times) round-trip."""
    fit, _ = saved
    path = tmp_path / "bad.npz"
    for change, fragment in (
        ({"method": "custom"}, "meta 'method' must be one of"),
        ({"info": {"tensor": torch.zeros(2)}}, "info is not JSON-serialisable"),
        (
            {"elbo": torch.full_like(fit.elbo, float("nan"))},
            r"member 'elbo' has \d+ NaN/inf entries \(first at \[0\]\)",
        ),
    ):
        with pytest.raises(pg.FitFileError, match=f"cannot write fit file {re.escape(repr(str(path)))}: {fragment}"):
            pg.GMMFit(**{**fit.__dict__, **change}).save(path)
        assert not path.exists()
    x = pg.datasets.load_old_faithful()
    for other in (pg.fit_map(x, K, seed=0, max_iter=5), pg.fit_svi(x, K, seed=0, num_steps=3)):
        other.save(path)
        back = pg.load_fit(path)
        assert back.info == other.info and torch.equal(back.times, other.times)
        assert torch.equal(back.kl_gap, other.kl_gap)
