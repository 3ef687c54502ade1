"""The documentation build's docstring rendering (docs/_ext/plain_docstrings.py), checked by docutils.

``make docs`` (warnings as errors) is the real check of the site; these tests pin the one piece of
logic the docs add: the package's plain-text maths docstrings must come out of reStructuredText as
exactly the text that was written, and without a docutils warning.
"""

from __future__ import annotations

import ast
import io
import sys
from pathlib import Path

import pytest

docutils_core = pytest.importorskip("docutils.core")  # the docs extra

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import plain_docstrings  # noqa: E402


def _parse(rst: str):
    """(doctree, warnings) of docutils' parse of an RST fragment."""
    stream = io.StringIO()
    doctree = docutils_core.publish_doctree(
        rst, settings_overrides={"warning_stream": stream, "report_level": 2, "halt_level": 5}
    )
    return doctree, stream.getvalue()


def _render(rst: str) -> tuple[str, str]:
    """(text, warnings) of docutils' rendering of an RST fragment."""
    doctree, warnings = _parse(rst)
    return doctree.astext(), warnings


def _docstring_lines() -> list[str]:
    """Every docstring line of the package that has no inline markup of its own (no backticks)."""
    lines = set()
    for path in sorted((ROOT / "ppl_gmm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    lines.update(line.strip() for line in doc.splitlines())
    plain = (
        line
        for line in lines
        if line and "`" not in line and not line.startswith(("..", ">>>")) and not line.endswith("::")
    )
    return sorted(line for line in plain if not plain_docstrings._EMPHASIS.search(line))


def test_plain_maths_renders_verbatim():
    # |Λ|, a stray *, a trailing _ and a literal in one line: docutils gives back the written text
    line = "E[ln |Λ_k|] for (C, S, *shape) and feature_, with ``a | b`` kept"
    text, warnings = _render(plain_docstrings.escape_line(line))
    assert warnings == ""
    assert text == line.replace("``", "")
    unescaped, unescaped_warnings = _render(line)
    assert "substitution" in unescaped_warnings  # the test input is one docutils would reject


def test_every_package_docstring_line_renders_verbatim():
    lines = _docstring_lines()
    assert len(lines) > 500  # the package's docstrings were found
    # one paragraph per line, each inside a sentence ("Text: " first) so it is never a list or title
    rst = "\n\n".join(f"Text: {plain_docstrings.escape_line(line)}" for line in lines)
    doctree, warnings = _parse(rst)
    assert warnings == ""
    texts = [" ".join(node.astext().split()) for node in doctree.children]
    assert texts == [" ".join(f"Text: {line}".split()) for line in lines]


def test_aligned_table_becomes_a_line_block():
    doc = [
        "Point estimate.",
        "",
        "alpha : (K,)   weights α_k",
        "cov   : (K, D, D)  covariances Σ_k, symmetric",
        "                   (1-D data: (K, 1, 1) variances)",
        "",
        "Example::",
        "",
        "    x | y stays *as written*",
    ]
    rst = "\n".join(plain_docstrings.plain_text_to_rst(doc))
    text, warnings = _render(rst)
    assert warnings == ""
    _, raw_warnings = _render("\n".join(doc))
    assert "Unexpected indentation" in raw_warnings
    for line in doc:
        assert line.strip().removesuffix("::") in text  # every line kept, the literal block untouched


def test_wrapped_numpydoc_names_are_joined():
    doc = ["Parameters", "----------", "a, b,", "c", "    shared description.", "d : int", "    own."]
    assert plain_docstrings.join_wrapped_names(doc) == [
        "Parameters",
        "----------",
        "a, b, c",
        "    shared description.",
        "d : int",
        "    own.",
    ]
