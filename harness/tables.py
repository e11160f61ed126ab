"""Tables for the terminal (aligned text), Markdown and HTML, from rows of dicts.

Columns are ``(key, header, format spec)``. The spec is a Python format spec
(``".1f"``, ``"d"``), ``""`` for text, or one of two of ours for the report:
``"si"`` (3 significant figures with an SI prefix: 0.00581 -> 5.81m, 1234 -> 1.23k;
the unit goes in the header) and ``"3g"`` (3 significant figures, never an
exponent). A missing or None value prints as '-'. HTML cells of numeric columns
carry their raw value in ``data-v`` so the report's sort script orders them as
numbers, not as text.
"""

from __future__ import annotations

import functools
import math
from html import escape

SI_PREFIXES = {-15: "f", -12: "p", -9: "n", -6: "\u00b5", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T",
               15: "P", 18: "E"}


def _digits(value: float) -> tuple[str, str, int]:
    """Sign, the 3 significant digits and the decimal exponent of ``value`` (rounded by ``format``)."""
    mantissa, exponent = f"{value:.2e}".split("e")
    sign = "-" if mantissa.startswith("-") else ""
    return sign, mantissa.lstrip("-").replace(".", ""), int(exponent)


@functools.lru_cache(maxsize=1 << 16)
def sig3(value: float) -> str:
    """3 significant figures, plain decimal: 45.26 -> 45.3, 0.005809 -> 0.00581, 1234.5 -> 1230."""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    sign, digits, e = _digits(value)
    if e >= 2:
        return sign + digits + "0" * (e - 2)
    if e >= 0:
        return f"{sign}{digits[:e + 1]}.{digits[e + 1:]}"
    return f"{sign}0.{'0' * (-e - 1)}{digits}"


@functools.lru_cache(maxsize=1 << 16)  # a report formats ~100k numbers, many of them repeated
def si(value: float) -> str:
    """3 significant figures with an SI prefix: 0.005809 -> 5.81m, 1234.5 -> 1.23k, 2.5e9 -> 2.50G."""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    sign, digits, e = _digits(value)
    e3 = e - e % 3
    if e3 not in SI_PREFIXES:
        return f"{value:.2e}"
    shift = e - e3
    number = digits[:shift + 1] + ("." + digits[shift + 1:] if shift < 2 else "")
    return sign + number + SI_PREFIXES[e3]


def cell(value, spec: str) -> str:
    """One value as a table cell."""
    if value is None:
        return "-"
    if spec == "si":
        return si(value) + ("!" if type(value).__name__ == "Impossible" else "")
    if spec == "3g":
        return sig3(value) + ("!" if type(value).__name__ == "Impossible" else "")
    if spec and isinstance(value, str):  # a text value in a numeric column (records of another schema)
        return value
    return format(value, spec) if spec else str(value)


def render(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """An aligned text table: text left, numbers right."""
    body = cells(rows, columns)
    headers = [header for _, header, _ in columns]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    numeric = [bool(spec) for _, _, spec in columns]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, body)])


def cells(rows: list[dict], columns: list[tuple[str, str, str]]) -> list[list[str]]:
    """Every row's cells as text (format once, render as Markdown and HTML), column by column."""
    by_column = [[cell(row.get(key), spec) for row in rows] for key, _, spec in columns]
    return [list(r) for r in zip(*by_column)] if columns else [[] for _ in rows]


def markdown(rows: list[dict], columns: list[tuple[str, str, str]], formatted: list[list[str]] | None = None) -> str:
    """A GitHub-flavoured Markdown table; numeric columns right-aligned. ``formatted``: the cells, when
    already made by ``cells``."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---:" if spec else "---" for _, _, spec in columns) + "|"
    body = ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"
            for r in (formatted if formatted is not None else cells(rows, columns))]
    return "\n".join([head, rule, *body])


def html(rows: list[dict], columns: list[tuple[str, str, str]], inline=None,
         formatted: list[list[str]] | None = None) -> str:
    """An HTML table; numeric cells right-aligned with their raw value in ``data-v`` (for sorting).
    ``inline``, when given, turns a text cell into HTML (the report renders inline Markdown such as
    `code` in error messages with it); otherwise text is escaped. ``formatted`` as for ``markdown``."""
    head = "".join(f"<th>{escape(h)}</th>" for _, h, _ in columns)
    text = inline or escape
    out = []
    for row, texts in zip(rows, formatted if formatted is not None else cells(rows, columns)):
        parts = []
        for (key, _, spec), shown in zip(columns, texts):
            if not spec:
                parts.append(f"<td>{text(shown)}</td>")
                continue
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                parts.append(f'<td class="num" data-v="{float(value)!r}">{shown}</td>')
            else:
                parts.append(f'<td class="num">{escape(shown)}</td>')
        out.append("<tr>" + "".join(parts) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(out)}</tbody></table>"
