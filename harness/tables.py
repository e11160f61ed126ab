"""Plain-text tables for the terminal: aligned columns, numbers right-aligned."""

from __future__ import annotations


def render(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """``columns`` are (key, header, format spec); a missing or None value prints as '-'."""

    def cell(value, spec):
        if value is None:
            return "-"
        return format(value, spec) if spec else str(value)

    body = [[cell(row.get(key), spec) for key, _, spec in columns] for row in rows]
    headers = [header for _, header, _ in columns]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    numeric = [bool(spec) for _, _, spec in columns]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, body)])
