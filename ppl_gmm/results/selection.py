"""SelectionTable: the result of ``select_k`` (one row per number of components)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SelectionTable"]


@dataclass(frozen=True)
class SelectionTable:
    """One row per K (dicts with the same keys, in order); ``criterion`` names the column that
    decides, ``higher_is_better`` its direction.  ``best`` is the chosen K."""

    method: str
    criterion: str
    higher_is_better: bool
    rows: tuple

    @property
    def ks(self) -> list:
        return [row["k"] for row in self.rows]

    @property
    def values(self) -> list:
        return [row[self.criterion] for row in self.rows]

    @property
    def best(self) -> int:
        pick = max if self.higher_is_better else min
        return pick(self.rows, key=lambda row: row[self.criterion])["k"]

    @property
    def columns(self) -> list:
        return list(self.rows[0])

    def as_dict(self) -> dict:
        """Column name -> list of values (``pandas.DataFrame(table.as_dict())`` works)."""
        return {c: [row[c] for row in self.rows] for c in self.columns}

    def to_records(self) -> list:
        """One dict per K."""
        return [dict(row) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.to_records())

    def __getitem__(self, k) -> dict:
        for row in self.rows:
            if row["k"] == k:
                return dict(row)
        raise KeyError(f"no row for k = {k}; the table has k in {self.ks}")

    def __str__(self) -> str:
        from .text import format_selection

        return format_selection(self)

    __repr__ = __str__
