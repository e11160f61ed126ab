"""``llmbench suite``: dry run, the folder it fills (targets.md, suite.json, report with the suite first),
failures noted with the suite going on, and exit codes. The steps' processes are faked here; the real
``--quick`` run takes about 2-3 minutes on the 2-core CPU (README, "Characterise a node")."""

import json
import sys

from harness import cli, suite
from harness.records import make_record, read_records


def test_dry_run_prints_the_command_lines(tmp_path, capsys):
    assert cli.main(["suite", "--quick", "--device", "cpu", "--dry-run", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.splitlines()
    runs = [line for line in out if not line.startswith("#")]
    assert runs[0] == f"{sys.executable} -m harness peak --buffer-mb 64 --matmul-n 512 --device cpu --out {tmp_path / 's'}"
    assert runs[-1].endswith(f"-m harness report {tmp_path / 's'} --out {tmp_path / 's' / 'report'} "
                             f"--first {tmp_path / 's' / 'targets.md'}")
    assert "# decode-engines-triton: skipped (needs a GPU)" in out
    assert any("kernel decode-attention" in line for line in runs)
    assert not (tmp_path / "s").exists()  # nothing written


def test_dry_run_default_folder_names_device_and_date(capsys):
    assert cli.main(["suite", "--device", "cpu", "--dry-run"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "into results/" in first and first[-10:-6].isdigit()  # results/<device>-YYYY-MM-DD
    assert "--model llama-3.1-8b" not in first


def fake(monkeypatch, fail=()):
    """Steps write one ok record (a failing one writes none and exits 1); the report step really runs."""
    real = suite.run_process

    def runner(cmd, log):
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(" ".join(cmd))
        if "report" in cmd:
            return real(cmd, log)
        out = cmd[cmd.index("--out") + 1]
        if log.stem in fail:
            return 1
        with open(f"{out}/records.jsonl", "a") as f:
            f.write(json.dumps(make_record(run_id="r", point={"workload": "copy", "dtype": "fp32"},
                                           derived={"achieved_gbps": 40.0},
                                           env={"device_type": "cpu", "device_name": "X", "host": "h"})) + "\n")
        return 0

    monkeypatch.setattr(suite, "run_process", runner)


def test_a_clean_run_fills_the_folder(tmp_path, monkeypatch, capsys):
    fake(monkeypatch)
    out = tmp_path / "s"
    assert cli.main(["suite", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[suite 1/11] peak:" in printed and "left" in printed
    targets = (out / "targets.md").read_text()
    assert "| peak memory bandwidth | X (h): copy 40.0 GB/s" in targets and "| met |" in targets
    assert "not measured here" in targets and "| decode-engines-triton | skipped |" in targets
    state = json.loads((out / "suite.json").read_text())
    assert state["quick"] and [s["status"] for s in state["steps"]].count("skipped") == 3
    assert state["report_returncode"] == 0
    report = (out / "report" / "report.md").read_text()
    assert report.index("## Targets") < report.index("## Steps") and report.startswith("# ")
    assert "peak memory bandwidth" in (out / "report" / "report.html").read_text()


def test_a_failing_step_is_recorded_the_suite_goes_on_and_exits_1(tmp_path, monkeypatch, capsys):
    fake(monkeypatch, fail=("decode-dtypes",))
    out = tmp_path / "s"
    assert cli.main(["suite", "--quick", "--device", "cpu", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "not everything ran: decode-dtypes failed" in err
    state = {s["name"]: s for s in json.loads((out / "suite.json").read_text())["steps"]}
    assert state["decode-dtypes"]["status"] == "failed" and state["decode-dtypes"]["returncode"] == 1
    assert state["finetune-fp32"]["status"] == "ok"  # went on
    failed = [r for r in read_records([out / "records.jsonl"]) if r["status"] == "failed"]
    assert [r["suite_step"] for r in failed] == ["decode-dtypes"] and failed[0]["workload"] == "decode"
    assert "| decode-dtypes | failed | 1 |" in (out / "targets.md").read_text()


def test_suite_is_registered():
    assert cli.COMMANDS["suite"].__name__ == "harness.commands.suite"
