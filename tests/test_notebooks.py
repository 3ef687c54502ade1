"""The research notebooks: the committed files are what notebooks/build.py generates, carry the
outputs of a full run, and execute top to bottom (quick mode, PPL_GMM_QUICK=1) without error,
printing the identities they claim at round-off."""

import importlib.util
import re
import shutil
from pathlib import Path

import nbformat
import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def _load_build():
    spec = importlib.util.spec_from_file_location("notebook_build", NB_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()
NAMES = sorted(build.NOTEBOOKS)


def _stdout(nb) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )


def _numbers(pattern: str, text: str) -> list:
    return [float(m) for m in re.findall(pattern, text)]


def _check_identities(name: str, text: str) -> None:
    """The numbers a notebook prints for its identities must be at round-off."""
    if name.startswith("01"):
        rel = _numbers(r"Pyro vs closed form ([0-9.e+-]+)", text)
        assert rel and rel[0] <= 1e-12
        grads = _numbers(r"max \|autograd − eq. 19\| / max \|eq. 19\| = ([0-9.e+-]+)", text)
        assert len(grads) == 4 and max(grads) <= 1e-10
        by_hand = _numbers(r"max \|Θ by hand − fit_cavi\| after \d+ iterations: ([0-9.e+-]+)", text)
        assert len(by_hand) == 1 and by_hand[0] <= 1e-10  # parameters of size ~1e2: agreement to round-off
        brute = _numbers(r"max \|p\(Z \| X, Θ\) − Π_i γ_i\(z_i\)\| = ([0-9.e+-]+)", text)
        assert brute and brute[0] <= 1e-12
        assert "labels/Monte Carlo" in text
    elif name.startswith("02"):
        assert "select_k(method='loo')" in text and "divergent transitions:" in text
    else:
        full = "quick mode: False" in text  # the committed outputs; quick mode has few draws
        # the samplers agree with NUTS (potential) within 4·√(MCSE₁² + MCSE₂²) + 0.1·sd on every scalar
        agree = _numbers(
            r"(?:NUTS \(Pyro model\)|NUTS \(ordered μ\)|Gibbs|ordered) vs (?:unordered )?NUTS(?: \(potential\))?: "
            r"max \|Δ mean\| / tolerance = ([0-9.]+)",
            text,
        )
        assert len(agree) == 6 and max(agree) <= 1.0, agree  # galaxies 3 + Old Faithful 2, ordered vs unordered
        # relabelling to one reference before R-hat: raw labels differ between chains, relabelled they agree
        r_hat = re.findall(r"Gibbs R-hat: ([0-9.]+) before relabelling, ([0-9.]+) after", text)
        assert len(r_hat) == 1
        before, after = map(float, r_hat[0])
        assert after < before
        if full:
            assert before > 1.5 and after <= 1.05
            assert all(v <= 1.05 for v in _numbers(r": R-hat ([0-9.]+), bulk ESS", text))  # ordered and unordered NUTS
        # the short two-chain run: one chain per galaxies mode, flagged
        assert "MultimodalityWarning: the 2 chains settled in different posterior modes" in text
        assert "chains_disagree = 1;" in text
        main_ll, minor_ll = _numbers(r"ln p\(X \| Θ̂\) = (-[0-9.]+)", text)
        assert -207 < main_ll < -203 and -214 < minor_ll < -210  # the two local maxima of the posterior
        # the identified set-up: ordered means, no relabelling, no switching
        assert "every draw has μ_1 < μ_2 < μ_3: True" in text
        switching = _numbers(r"ordered μ\s+: R-hat \S+, bulk ESS \d+, label switching within chains ([0-9.]+)", text)
        assert switching == [0.0]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_generated_and_executed(name):
    path = NB_DIR / name
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert build.sources(nb) == build.sources(build.build(name)), "run: python notebooks/build.py"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "commit the notebooks with their outputs"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    text = _stdout(nb)
    assert "quick mode: False" in text  # outputs of the full-size run
    _check_identities(name, text)
    assert all("execution" not in c.metadata for c in code)  # no time stamps


def test_quick_builds_never_overwrite_the_committed_notebooks(tmp_path, monkeypatch):
    """``build.py --quick`` writes to a scratch directory (``--out-dir``, default ``QUICK_DIR``) and
    refuses the committed directory. Run on copies, with execution stubbed out (no kernel)."""
    assert build.QUICK_DIR.resolve() != build.HERE.resolve()  # the real default is elsewhere
    committed = tmp_path / "committed"
    committed.mkdir()
    for name in NAMES:
        shutil.copy(NB_DIR / name, committed / name)
    before = {name: (committed / name).read_bytes() for name in NAMES}
    monkeypatch.setattr(build, "HERE", committed)
    monkeypatch.setattr(build, "QUICK_DIR", tmp_path / "quick")
    monkeypatch.setattr(build, "execute", lambda nb, **kwargs: nb)
    assert build.main(["--quick"]) == 0
    assert all((tmp_path / "quick" / name).is_file() for name in NAMES)
    assert build.main(["--quick", "--out-dir", str(tmp_path / "elsewhere"), NAMES[0]]) == 0
    assert (tmp_path / "elsewhere" / NAMES[0]).is_file()
    with pytest.raises(SystemExit):
        build.main(["--quick", "--out-dir", str(committed)])
    assert {name: (committed / name).read_bytes() for name in NAMES} == before


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_headless_in_quick_mode(name):
    nb = build.execute(build.build(name), quick=True, timeout=600)  # raises CellExecutionError on any error
    text = _stdout(nb)
    assert "quick mode: True" in text
    _check_identities(name, text)
