"""The command line's CSV reader: a file of numbers in, an (N, D) float64 array out, or one clear error.

The rules, each checked before the file's contents are parsed any further:

- the input must be a regular file (not a directory, a device such as ``/dev/zero``, a pipe or a
  socket; standard input, ``-``, is not read) of at most :data:`MAX_INPUT_BYTES` bytes (1 GiB), and
  no line may be longer than :data:`MAX_LINE_CHARS` characters (1 MiB). A single field is further
  limited to ``csv.field_size_limit()`` characters (128 KiB unless the process changed it);
- the text is UTF-8; a byte-order mark at the start is dropped (``utf-8-sig``);
- with ``header=True`` (the default) the first non-blank row names the columns, and a first row
  whose every field is a finite number is refused: it looks like data, and reading it as a header
  would silently lose one row. ``header=False`` (``--no-header``) reads it as data and names the
  columns ``x1`` … ``xD``;
- blank rows are skipped; every other row must have as many fields as the first, and every chosen
  field must be a finite number (an empty field, ``NA``, ``nan`` and the like are missing values).
"""

from __future__ import annotations

import array
import csv
import math
import os
import stat
from collections.abc import Iterator, Sequence
from typing import TextIO

import numpy as np

__all__ = ["CliError", "read_csv", "check_input_file", "size_text", "MAX_INPUT_BYTES", "MAX_LINE_CHARS"]

#: The largest input file read (bytes): 1 GiB. Larger files are refused before anything is read.
MAX_INPUT_BYTES = 1 << 30
#: The longest line read (characters, line ending excluded): 1 MiB.
MAX_LINE_CHARS = 1 << 20
_MISSING = {"", "na", "n/a", "nan", "null", "none", "?", "-"}


class CliError(Exception):
    """Bad input: reported as one line on stderr, exit code 2."""


def size_text(n: int) -> str:
    """``n`` bytes for a message: "1.5 GiB"."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


def check_input_file(
    path: str | os.PathLike[str], max_bytes: int | None = MAX_INPUT_BYTES, kind: str = "a CSV file"
) -> None:
    """Refuse, without opening it, anything but a regular file of at most ``max_bytes`` (None: any
    size, for a memory-mapped ``.npy``, which is never loaded whole); ``kind`` names what was expected."""
    if os.fspath(path) == "-":
        raise CliError("reading the data from standard input ('-') is not supported; save it to a file first")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except PermissionError:
        raise CliError(f"{path}: permission denied") from None
    except OSError as err:
        raise CliError(f"{path}: cannot read it: {err.strerror or err}") from None
    except ValueError:  # an embedded NUL byte
        raise CliError(f"{os.fspath(path)!r}: not a valid file name") from None
    if stat.S_ISDIR(st.st_mode):
        raise CliError(f"{path}: is a directory, not {kind}")
    if not stat.S_ISREG(st.st_mode):
        raise CliError(f"{path}: not a regular file (a device, pipe or socket); save the data to a file first")
    if max_bytes is not None and st.st_size > max_bytes:
        raise CliError(
            f"{path}: the file is {size_text(st.st_size)}, larger than the limit of {size_text(max_bytes)} "
            "(save it as .npy, which is read in blocks, or fit a sample of the rows)"
        )


def _lines(fh: TextIO, path) -> Iterator[str]:
    """The file's lines, refusing any longer than MAX_LINE_CHARS and stopping at MAX_INPUT_BYTES
    characters (at most that many bytes) in case the file grew after it was checked."""
    total, number = 0, 0
    while True:
        line = fh.readline(MAX_LINE_CHARS + 3)
        if not line:
            return
        number += 1
        if len(line.rstrip("\r\n")) > MAX_LINE_CHARS:
            raise CliError(
                f"{path}: line {number} is longer than the limit of {size_text(MAX_LINE_CHARS)} characters "
                "(is it a CSV file?)"
            )
        total += len(line)
        if total > MAX_INPUT_BYTES:
            raise CliError(f"{path}: the file is larger than the limit of {size_text(MAX_INPUT_BYTES)}")
        yield line


def read_csv(
    path: str | os.PathLike[str], columns: Sequence[str] | None = None, *, header: bool = True
) -> tuple[list[str], np.ndarray]:
    """(column names, (N, D) float64 array) of a CSV file (module docstring for the rules).

    ``columns``: names to keep, each entry may hold several separated by commas (default: every
    column; each must then be numeric). ``header=False``: the first row is data and the columns
    are named ``x1`` … ``xD``. Raises :class:`CliError` naming the file, line and column of the
    first problem.
    """
    check_input_file(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced since it was checked
                raise CliError(f"{path}: not a regular file")
            return _parse(csv.reader(_lines(fh, path), strict=True), path, columns, header)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except PermissionError:
        raise CliError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a UTF-8 text file (is it a CSV?)") from None
    except csv.Error as err:
        raise CliError(f"{path}: malformed CSV: {err}") from None
    except OSError as err:
        raise CliError(f"{path}: cannot read it: {err.strerror or err}") from None


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _select(path, names: list[str], columns: Sequence[str] | None) -> tuple[list[str], list[int]]:
    if not columns:
        return names, list(range(len(names)))
    wanted = [c.strip() for spec in columns for c in spec.split(",") if c.strip()]
    if not wanted:
        raise CliError(f"--columns names no column; the columns are {', '.join(names)}")
    twice = [c for i, c in enumerate(wanted) if c in wanted[:i]]
    if twice:
        raise CliError(f"--columns names {twice[0]!r} twice (a repeated column makes every covariance singular)")
    missing = [c for c in wanted if c not in names]
    if missing:
        raise CliError(f"{path}: no column {missing[0]!r}; the columns are {', '.join(names)}")
    return wanted, [names.index(c) for c in wanted]


def _header(path, fields: list[str]) -> list[str]:
    if all(_is_number(f) for f in fields):
        shown = ", ".join(fields[:4]) + (", ..." if len(fields) > 4 else "")
        raise CliError(
            f"{path}: the first row ({shown}) holds only numbers, so it looks like data, not a header; "
            f"pass --no-header to read it as data (columns x1..x{len(fields)}), or add a header row"
        )
    if any(not h for h in fields):
        raise CliError(f"{path}: column {fields.index('') + 1} of the header row has no name")
    twice = [h for i, h in enumerate(fields) if h in fields[:i]]
    if twice:
        raise CliError(f"{path}: the header names column {twice[0]!r} twice")
    return fields


def _parse(reader, path, columns: Sequence[str] | None, header: bool) -> tuple[list[str], np.ndarray]:
    names: list[str] | None = None
    wanted: list[str] = []
    index: list[int] = []
    values = array.array("d")
    n_rows, first_data = 0, 0
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        line = reader.line_num
        if names is None:
            if header:
                names = _header(path, [c.strip() for c in row])
                wanted, index = _select(path, names, columns)
                continue
            names = [f"x{j + 1}" for j in range(len(row))]
            wanted, index = _select(path, names, columns)
            first_data = line
        if len(row) != len(names):
            first = "the header has" if header else "the first row has"
            raise CliError(f"{path}: malformed CSV: line {line} has {len(row)} fields but {first} {len(names)}")
        for j, c in zip(wanted, index):
            hint = ""
            if not header and line == first_data:
                hint = "; if this row is a header, drop --no-header"
            elif not columns:
                hint = "; choose numeric columns with --columns"
            values.append(_number(row[c], path, line, j, hint))
        n_rows += 1
    if names is None:
        expected = "a header row and data rows" if header else "data rows"
        raise CliError(f"{path}: the file is empty (expected {expected})")
    if n_rows == 0:
        raise CliError(f"{path}: has a header row but no data rows")
    return wanted, np.frombuffer(values, dtype=np.float64).reshape(n_rows, len(index)).copy()


def _number(text: str, path, line: int, column: str, hint: str) -> float:
    value = text.strip()
    if value.lower() in _MISSING:
        raise CliError(f"{path}: missing value in column {column!r} at line {line} (drop or impute it first)")
    try:
        v = float(value)
    except ValueError:
        shown = repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
        raise CliError(f"{path}: column {column!r} is not numeric: line {line} has {shown}{hint}") from None
    if not math.isfinite(v):
        raise CliError(f"{path}: non-finite value {value!r} in column {column!r} at line {line}")
    return v
