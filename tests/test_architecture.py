"""The package's layering, checked from its source (every import, including those inside functions).

Folders and their rank: a module may import only from its own folder or a folder of lower rank
(core 0; datasets, ppl, results 1; inference 2; viz 3; app and sklearn 4), never from a sibling of the same
rank, and never a private name (``_x``) or a private module from another folder. The import graph
has no cycle. Each equation has one implementation: the patterns below occur only in their home.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ppl_gmm"
RANK = {"core": 0, "datasets": 1, "ppl": 1, "results": 1, "inference": 2, "viz": 3, "app": 4, "sklearn": 4}
ESTIMATORS = {"cavi", "map", "vb", "svi", "svi_bayes", "nuts", "gibbs", "model_selection"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module imported, names imported from it) for every import in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if target.startswith("ppl_gmm"):
                # `from . import plot` imports the module ppl_gmm.<pkg>.plot
                sub = [
                    f"{target}.{n}"
                    for n in names
                    if (PACKAGE.parent / f"{target}.{n}".replace(".", "/")).exists()
                    or (PACKAGE.parent / (f"{target}.{n}".replace(".", "/") + ".py")).exists()
                ]
                out += [(s, []) for s in sub]
                out.append((target, [n for n in names if f"{target}.{n}" not in sub]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("ppl_gmm")]
    return out


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_layer():
    loose = [m for m in MODULES if m.count(".") >= 1 and _folder(m) is None and m not in ("ppl_gmm.__main__",)]
    assert loose == [], f"modules outside the layer folders: {loose}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layers(module):
    src = _folder(module)
    if src is None:  # ppl_gmm/__init__.py and __main__.py sit above every layer
        return
    for target, names in _imports(MODULES[module]):
        dst = _folder(target)
        if dst is None or target == "ppl_gmm":
            assert target != "ppl_gmm" or names == ["__version__"], f"{module} imports the package root: {names}"
            continue
        if dst != src:
            assert RANK[dst] < RANK[src], f"{module} (layer {src}) imports {target} (layer {dst})"
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{module} imports private names {private} from another folder ({target})"
            assert not target.split(".")[-1].startswith("_"), f"{module} imports the private module {target}"
        elif src == "inference":
            here, there = module.split(".")[-1], target.split(".")[-1]
            if here in ESTIMATORS and there in ESTIMATORS and here != there:
                helpers = [n for n in names if not (n.startswith("fit_") or n == "loo_elpd")]
                assert not helpers, f"{module} takes helpers {helpers} from another estimator ({target})"


def test_no_import_cycle():
    graph = {m: {t for t, _ in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    # a package's __init__ is executed before its submodules: an import of ppl_gmm.x.y also imports ppl_gmm.x
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, m, t]))
            if t not in state:
                visit(t, [*path, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


# pattern -> the only files (relative to ppl_gmm/) where it may occur
ONE_HOME = {
    r"cholesky_ex\(": {"core/linalg.py"},  # the Cholesky that names the failing component
    r"linear_sum_assignment\(": {"results/matching.py"},  # the Hungarian matcher
    r"def log_wishart_norm\(|lgamma\(0\.5 \* \(nu": {"core/_distributions.py"},  # ln B(W, ν), PRML B.79
    r"\.exp_\(\)": {"core/gaussian.py", "inference/_engine.py"},  # the E-step normalisation (eq. 20)
    r"xlogy\(": {"core/gmm.py"},  # the entropy term of eq. 18
    r"beta0 \+ n_k|alpha0 \+ n_k": {"core/_conjugate.py"},  # the conjugate update, PRML 10.58–10.63
    r"digamma\(": {"core/_distributions.py", "core/_vb_weights.py"},  # E[ln |Λ|] (10.65) and E[ln π] (10.66)
    r"def (fit_em|reference_fit|map_estimate)\b": set(),  # oracles live in tests/
}


@pytest.mark.parametrize("pattern", sorted(ONE_HOME))
def test_each_formula_has_one_home(pattern):
    found = {}
    for path in PACKAGE.rglob("*.py"):
        code = [line.split("#")[0] for line in path.read_text(encoding="utf-8").splitlines()]
        hits = [i + 1 for i, line in enumerate(code) for _ in re.findall(pattern, line)]
        if hits:
            found[str(path.relative_to(PACKAGE))] = hits
    stray = {f: lines for f, lines in found.items() if f not in ONE_HOME[pattern]}
    assert not stray, f"{pattern!r} outside its home {sorted(ONE_HOME[pattern])}: {stray}"
    if pattern == r"digamma\(":
        # ψ once in 10.65, twice in 10.66's one line, once for the sticks' E[ln v], E[ln(1 − v)]
        assert sum(len(v) for v in found.values()) == 4, found
