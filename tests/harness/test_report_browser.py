"""A report page in headless Chromium (harness/report_browser.py): console errors, images that do not decode and
raw Markdown are found; a clean page passes. Needs the Debian package ``chromium``: skipped without it, failed
where LLMBENCH_REQUIRE_BROWSER=1 (CI installs it)."""

import os

import pytest

from harness import report_browser

BAD = """<!doctype html><html><head><meta charset="utf-8"><title>bad</title></head><body>
<p>Run `llmbench peak` and **this**</p>
<img alt="broken" src="data:image/png;base64,AAAA">
<script>console.error("boom"); notDefined();</script></body></html>"""

GOOD = """<!doctype html><html><head><meta charset="utf-8"><title>good</title></head><body>
<p>Run <code>llmbench peak</code> and <strong>this</strong>; 3 - 2 = 1.</p>
<ul><li>a bullet, rendered</li></ul>
<img alt="dot" src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==">
<table><tr><td>-</td><td>1.23k</td></tr></table>
<script>document.title = "ran";</script></body></html>"""


@pytest.fixture()
def browser():
    found = report_browser.find_browser()
    if not found:
        if os.environ.get("LLMBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail("LLMBENCH_REQUIRE_BROWSER=1 but no Chromium: apt-get install chromium")
        pytest.skip("no Chromium on this machine (Debian package `chromium`)")
    return found


def test_a_broken_page_is_caught(tmp_path, browser):
    page = tmp_path / "bad.html"
    page.write_text(BAD)
    result = report_browser.check(page, browser=browser)
    found = report_browser.problems(result)
    assert any(p == "console: boom" for p in found)
    assert any(p.startswith("exception: ReferenceError: notDefined") for p in found)
    assert "image did not decode: broken" in found
    assert 'raw Markdown in the text: backticks: "`llmbench peak`"' in found
    assert any(p.startswith("raw Markdown in the text: bold") for p in found)
    assert report_browser.main([str(page)]) == 1


def test_a_clean_page_passes_and_is_photographed(tmp_path, browser, capsys):
    page = tmp_path / "good.html"
    page.write_text(GOOD)
    shot = tmp_path / "shot.png"
    result = report_browser.check(page, screenshot=shot, script="document.title", browser=browser)
    assert report_browser.problems(result) == []
    assert result["images"] == 1 and result["tables"] == 1 and result["value"] == "ran"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report_browser.main([str(page)]) == 0
    assert "1 images, 1 tables, no problems" in capsys.readouterr().out


def test_no_browser_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMBENCH_CHROMIUM", str(tmp_path / "no-such-browser"))
    assert report_browser.find_browser() is None
    page = tmp_path / "p.html"
    page.write_text(GOOD)
    with pytest.raises(report_browser.BrowserError, match="no Chromium found"):
        report_browser.check(page)
    assert report_browser.main([str(page)]) == 2
    assert report_browser.main([str(tmp_path / "missing.html")]) == 2
    err = capsys.readouterr().err
    assert "no Chromium found" in err and "no such file" in err and "Traceback" not in err


def test_problems_lists_each_kind():
    result = {"errors": ["console: x"], "broken": ["fig"], "raw": ["bold: \"**a**\""]}
    assert report_browser.problems(result) == ["console: x", "image did not decode: fig",
                                               "raw Markdown in the text: bold: \"**a**\""]
