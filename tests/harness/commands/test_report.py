"""``llmbench report``: where the report goes by default, and clear errors for bad input."""

import pytest

from harness import cli
from harness.records import RECORDS_FILE, append_record, make_record


def test_report_goes_next_to_the_first_input_by_default(tmp_path, capsys):
    run = tmp_path / "run"
    append_record(run / RECORDS_FILE, make_record(run_id="p", point={"workload": "copy", "dtype": "fp32"},
                                                  derived={"achieved_gbps": 10.0}, env={"device_name": "cpu"}))
    assert cli.main(["report", str(run)]) == 0
    assert (run / "report" / "report.html").exists() and (run / "report" / "report.md").exists()
    assert str(run / "report" / "report.html") in capsys.readouterr().out


def test_report_without_records_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    assert "no records found" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["{missing}"], "no records at"),
    (["{run}", "--out", ""], "argument --out: expected a folder path"),
    (["{run}", "--title", "  "], "argument --title: expected a one-line, non-empty title"),
])
def test_bad_input_exits_2(tmp_path, capsys, argv, message):
    paths = {"missing": tmp_path / "nope", "run": tmp_path}
    try:
        code = cli.main(["report", *[a.format(**paths) for a in argv]])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err


def test_a_report_that_cannot_be_written_exits_1_and_keeps_the_records(tmp_path, monkeypatch, capsys):
    from harness import report

    run = tmp_path / "run"
    append_record(run / RECORDS_FILE, make_record(run_id="p", point={"workload": "copy", "dtype": "fp32"},
                                                  derived={"achieved_gbps": 10.0}, env={"device_name": "cpu"}))
    before = (run / RECORDS_FILE).read_bytes()

    def full(inputs, out, **options):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "build", full)
    assert cli.main(["report", str(run)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert (run / RECORDS_FILE).read_bytes() == before


def test_a_markdown_file_shown_first_is_rendered_not_printed(tmp_path, capsys):
    run = tmp_path / "run"
    append_record(run / RECORDS_FILE, make_record(run_id="p", point={"workload": "copy", "dtype": "fp32"},
                                                  derived={"achieved_gbps": 10.0}, env={"device_name": "cpu"}))
    targets = tmp_path / "targets.md"
    targets.write_text("# llmbench suite: cpu\n\n## Targets\n\n| target | verdict |\n|---|---|\n| `peak` | met |\n")
    assert cli.main(["report", str(run), "--first", str(targets)]) == 0
    md = (run / "report" / "report.md").read_text()
    assert md.index("## llmbench suite: cpu") < md.index("## cpu") and "| `peak` | met |" in md
    html = (run / "report" / "report.html").read_text()
    assert "<td><code>peak</code></td>" in html and "<h2>Targets</h2>" in html and "| target |" not in html
    assert cli.main(["report", str(run), "--first", str(tmp_path / "missing.md")]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "missing.md" in err and "Traceback" not in err
