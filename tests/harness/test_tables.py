"""Tables (harness/tables.py): aligned text, Markdown and HTML from rows of dicts; 3 significant figures with SI
prefixes for the report."""

import pytest

from harness import tables

COLUMNS = [("name", "Name", ""), ("rate", "tok/s", ".1f"), ("n", "N", "d")]
ROWS = [{"name": "alpha", "rate": 1234.56, "n": 3}, {"name": "b", "rate": None, "n": 12}, {"name": "gamma|x"}]


def test_render_aligns_text_left_and_numbers_right():
    lines = tables.render(ROWS, COLUMNS).split("\n")
    assert lines == [
        "Name      tok/s   N",
        "-------  ------  --",
        "alpha    1234.6   3",
        "b             -  12",
        "gamma|x       -   -",
    ]


def test_render_header_wider_than_values_and_no_trailing_spaces():
    text = tables.render([{"k": "a", "v": 1.0}], [("k", "Key header", ""), ("v", "Value", ".2f")])
    assert text.split("\n") == ["Key header  Value", "----------  -----", "a            1.00"]
    assert all(line == line.rstrip() for line in text.split("\n"))


def test_render_text_last_column_has_no_padding():
    text = tables.render([{"v": 2, "k": "a"}, {"v": 10, "k": "long name"}], [("v", "V", "d"), ("k", "Key", "")])
    assert text.split("\n") == [" V  Key", "--  ---------", " 2  a", "10  long name"]


def test_render_without_rows_is_header_and_rule():
    assert tables.render([], COLUMNS).split("\n") == ["Name  tok/s  N", "----  -----  -"]


def test_render_format_specs():
    text = tables.render([{"p": 0.1234, "b": 2.5e9, "i": 1_000_000}],
                         [("p", "pct", ".1%"), ("b", "bytes", ".3g"), ("i", "int", ",")])
    assert text.split("\n")[2].split() == ["12.3%", "2.5e+09", "1,000,000"]


def test_markdown_alignment_row_and_escaped_pipes():
    lines = tables.markdown(ROWS, COLUMNS).split("\n")
    assert lines[0] == "| Name | tok/s | N |"
    assert lines[1] == "|---|---:|---:|"
    assert lines[2] == "| alpha | 1234.6 | 3 |"
    assert lines[3] == "| b | - | 12 |"
    assert lines[4] == "| gamma\\|x | - | - |"
    assert len(lines) == 2 + len(ROWS)


def test_html_escapes_and_marks_numeric_cells_with_their_raw_value():
    text = tables.html([{"name": "<b>&</b>", "rate": 2.0, "n": None}], [("name", "Name <x>", ""), *COLUMNS[1:]])
    assert text.startswith("<table><thead><tr>") and text.endswith("</tbody></table>")
    assert "<th>Name &lt;x&gt;</th><th>tok/s</th><th>N</th>" in text
    assert "<td>&lt;b&gt;&amp;&lt;/b&gt;</td>" in text
    assert '<td class="num" data-v="2.0">2.0</td>' in text  # the sort script reads data-v
    assert '<td class="num">-</td>' in text
    assert "<b>" not in text
    assert text.count("<tr>") == 2


def test_html_renders_text_cells_through_inline_when_given():
    text = tables.html([{"e": "run `peak`"}], [("e", "error", "")], inline=lambda t: t.replace("`", "|"))
    assert "<td>run |peak|</td>" in text


@pytest.mark.parametrize("value, si, sig3", [
    (0.005809, "5.81m", "0.00581"), (9.26, "9.26", "9.26"), (6.521e-05, "65.2\u00b5", "0.0000652"),
    (1234.5, "1.23k", "1230"), (999.7, "1.00k", "1000"), (2.5e9, "2.50G", "2500000000"), (394.23, "394", "394"),
    (0.1, "100m", "0.100"), (-3200.0, "-3.20k", "-3200"), (45.26, "45.3", "45.3"), (0, "0", "0"),
    (3.2e12, "3.20T", "3200000000000"),
])
def test_three_significant_figures_with_and_without_si_prefixes(value, si, sig3):
    assert tables.si(value) == si and tables.sig3(value) == sig3


def test_si_and_3g_specs_in_cells_keep_the_impossible_mark():
    class Impossible(float):
        pass

    assert tables.cell(Impossible(106.66), "3g") == "107!" and tables.cell(Impossible(2.5e12), "si") == "2.50T!"
    assert tables.cell(None, "si") == "-" and tables.cell(1e-20, "si") == "1.00e-20"
    assert tables.markdown([{"v": 1234.5}], [("v", "tok/s", "si")]).splitlines()[2] == "| 1.23k |"
    formatted = tables.cells([{"v": 1.0}], [("v", "x", "si")])
    assert tables.markdown([{"v": 5.0}], [("v", "x", "si")], formatted).splitlines()[2] == "| 1.00 |"  # reused
