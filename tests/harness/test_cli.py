"""The command table and ``main``: every subcommand registered, a user's mistake is exit 2 in one
line, an interrupt is 130, and ``python -m harness`` is the same command."""

import argparse
import subprocess
import sys

import pytest

from harness import cli
from workloads.errors import UserError

TINY = ["decode", "--model", "tiny-llama", "--prompt-len", "12", "--new-tokens", "5", "--repeats", "2",
        "--no-progress", "--no-ceilings"]


def test_every_command_has_a_module_with_add_parser_and_run():
    parser = cli.build_parser()
    [subcommands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(subcommands.choices) == list(cli.COMMANDS)
    for name, module in cli.COMMANDS.items():
        assert module.__name__ == f"harness.commands.{name.replace('-', '_')}"
        assert callable(module.add_parser) and callable(module.run)


@pytest.mark.parametrize("raised, code, text", [
    (UserError("the file is wrong"), 2, "llmbench env: error: the file is wrong"),
    (KeyboardInterrupt(), 130, "llmbench env: interrupted; records written so far are complete"),
])
def test_main_turns_mistakes_and_interrupts_into_exit_codes(monkeypatch, capsys, raised, code, text):
    def run(args):
        assert args.parser.prog == "llmbench"  # every command sees the whole parser
        raise raised

    monkeypatch.setattr(cli.COMMANDS["env"], "run", run)
    assert cli.main(["env"]) == code
    err = capsys.readouterr().err
    assert err.strip() == text and "Traceback" not in err


def test_argument_type_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["decode", "--batch-size", "one"])
    assert exc.value.code == 2
    assert "expected comma-separated integers" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "harness", *TINY, "--model", "tiny-gpt2", "--dtype", "fp32", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "tiny-gpt2" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "harness", "decode", "--model", "nope"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_record_that_missed_the_records_file_makes_the_command_exit_1(tmp_path, monkeypatch, capsys):
    from harness import records

    def run(args):
        def refuse(*a):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(records.os, "write", refuse)
        monkeypatch.setattr(records, "RETRY_DELAY_S", 0)
        records.append_record(tmp_path / "records.jsonl", records.make_record(run_id="r", point={}))
        return 0

    monkeypatch.setattr(cli.COMMANDS["env"], "run", run)
    assert cli.main(["env"]) == 1
    assert "did not reach" in capsys.readouterr().err
