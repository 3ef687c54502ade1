"""Render ppl_gmm's plain-text maths docstrings as reStructuredText without changing their meaning.

The package's docstrings write maths in Unicode plain text (``ln |Λ_k|``, ``(C, S, *shape)``,
``feature_``) and often lay out a few fields as an aligned plain-text table whose continuation lines
are indented under the description column. To reStructuredText those are substitution references,
emphasis, hyperlink references and unexpected indentation. This Sphinx extension, run on every
docstring after napoleon (``autodoc-process-docstring``), makes them literal text:

- outside ````literals````, ```roles```, literal blocks (after ``::``), directives and doctests it
  escapes ``|`` (never a substitution here: the package defines none), a ``*`` that does not open
  or close a ``*emphasis*``/``**strong**`` pair, and a trailing ``_`` after a word (``feature_``);
- a paragraph with a line more indented than its first (an aligned plain-text table, where
  docutils would report "Unexpected indentation" or make a definition list of it) becomes a line
  block, which keeps every line break and the indentation and still renders inline markup.

Before napoleon, a numpydoc parameter list wrapped over two lines (``a, b, c,`` then ``d, e``) is
joined into one header line, as numpydoc requires.

Anything else (numpy sections through napoleon, ``:math:``, field lists, bullet and enumerated
lists) is left as written.
"""

from __future__ import annotations

import re
from typing import Any

# inline literals and interpreted text (roles included): never touched
_LITERAL = re.compile(r"(``.+?``|:[\w:.+-]+:`[^`]*`|`[^`]*`_{0,2})")
# a well-formed *emphasis* or **strong** span
_EMPHASIS = re.compile(r"(?<![\w*\\])(\*\*?)(?=[^\s*])(.+?)(?<=[^\s\\])\1(?![\w*])")
_BAR = re.compile(r"(?<!\\)\|")
_STAR = re.compile(r"(?<!\\)\*")
_TRAILING_UNDERSCORE = re.compile(r"(?<=\w)_(?=$|[\s).,;:!?'\"\]])")


def _escape_text(text: str) -> str:
    """Escape ``|``, stray ``*`` and a trailing ``_`` in text that holds no literal."""
    text = _BAR.sub(r"\\|", text)
    text = _TRAILING_UNDERSCORE.sub(r"\\_", text)
    pieces = _EMPHASIS.split(text)
    # split with two groups: [text, marker, body, text, marker, body, ..., text]
    out = []
    for i in range(0, len(pieces), 3):
        out.append(_STAR.sub(r"\\*", pieces[i]))
        if i + 2 < len(pieces):
            marker, body = pieces[i + 1], pieces[i + 2]
            out.append(f"{marker}{body}{marker}")
    return "".join(out)


def escape_line(line: str) -> str:
    """One docstring line with its plain-text maths made literal (literals and roles untouched)."""
    parts = _LITERAL.split(line)
    return "".join(part if i % 2 else _escape_text(part) for i, part in enumerate(parts))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_markup_start(stripped: str) -> bool:
    """A line that starts an RST construct whose indented continuation is legal."""
    return stripped.startswith((":", "..", ">>>", "- ", "* ", "+ ")) or bool(re.match(r"\d+[.)] ", stripped))


def _line_block(block: list[str]) -> list[str]:
    """An aligned plain-text table as an RST line block (indentation kept, markup rendered)."""
    base = min(_indent(line) for line in block)
    return [" " * base + "| " + line[base:] for line in block]


def plain_text_to_rst(lines: list[str]) -> list[str]:
    """The whole transformation, on a docstring's lines (returns new lines)."""
    out: list[str] = []
    literal_indent: int | None = None  # inside a literal block / directive body: the opener's indent
    block: list[str] = []

    def flush() -> None:
        if not block:
            return
        base = _indent(block[0])
        aligned = not _is_markup_start(block[0].lstrip()) and any(_indent(line) > base for line in block[1:])
        out.extend(_line_block(block) if aligned else block)
        block.clear()

    for line in lines:
        stripped = line.strip()
        if literal_indent is not None:
            if not stripped or _indent(line) > literal_indent:
                out.append(line)
                continue
            literal_indent = None
        if not stripped:
            flush()
            out.append(line)
            continue
        if stripped.startswith((">>>", "..")):
            flush()
            out.append(line)
            literal_indent = _indent(line) if stripped.startswith("..") else None
            continue
        block.append(escape_line(line))
        if stripped.endswith("::"):
            flush()
            literal_indent = _indent(line)
    flush()
    return out


_NAMED_SECTIONS = ("Parameters", "Other Parameters", "Attributes", "Returns", "Yields", "Raises", "Warns")


def join_wrapped_names(lines: list[str]) -> list[str]:
    """numpydoc: a list of names wrapped over several lines (each but the last ending in ``,``) at
    the indentation of a Parameters/Attributes/... section, joined into one header line."""
    out: list[str] = []
    section_indent: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        underline = i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}
        if underline:
            section_indent = _indent(line) if stripped in _NAMED_SECTIONS else None
        if (
            section_indent is not None
            and out
            and stripped
            and _indent(line) == section_indent
            and out[-1].rstrip().endswith(",")
            and _indent(out[-1]) == section_indent
        ):
            out[-1] = out[-1].rstrip() + " " + stripped
            continue
        out.append(line)
    return out


def _join_names(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if name.startswith("ppl_gmm"):
        lines[:] = join_wrapped_names(lines)


def _process(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if name.startswith("ppl_gmm"):
        lines[:] = plain_text_to_rst(lines)


def setup(app: Any) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.napoleon")  # napoleon's handler first: this one sees its RST
    app.connect("autodoc-process-docstring", _join_names, priority=400)  # before napoleon (500)
    app.connect("autodoc-process-docstring", _process, priority=600)  # after napoleon
    return {"parallel_read_safe": True, "parallel_write_safe": True}
