"""Tables for the terminal (aligned text), Markdown and HTML, from rows of dicts."""

from __future__ import annotations


def render(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """``columns`` are (key, header, format spec); a missing or None value prints as '-'."""

    body = _cells(rows, columns)
    headers = [header for _, header, _ in columns]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    numeric = [bool(spec) for _, _, spec in columns]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, body)])


def _cells(rows, columns):
    def cell(value, spec):
        if value is None:
            return "-"
        return format(value, spec) if spec else str(value)

    return [[cell(row.get(key), spec) for key, _, spec in columns] for row in rows]


def markdown(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A GitHub-flavoured Markdown table; numeric columns right-aligned."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---:" if spec else "---" for _, _, spec in columns) + "|"
    body = ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in _cells(rows, columns)]
    return "\n".join([head, rule, *body])


def html(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    from html import escape

    head = "".join(f"<th>{escape(h)}</th>" for _, h, _ in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if spec else ""}">{escape(c)}</td>'
                         for c, (_, _, spec) in zip(r, columns)) + "</tr>"
        for r in _cells(rows, columns)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
