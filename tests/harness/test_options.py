"""Shared CLI pieces (harness/options.py): argument types, shared options and their defaults, check_writable."""

import argparse
import os
from pathlib import Path

import pytest

from harness import options
from workloads.errors import UserError


@pytest.mark.parametrize("text, value", [("1", 1), ("7", 7), (" 12 ", 12), ("+3", 3)])
def test_positive_int_accepts_at_least_one(text, value):
    assert options.positive_int(text) == value


@pytest.mark.parametrize("text, message", [("0", "at least 1"), ("-1", "at least 1"), ("-100", "at least 1"),
                                           ("1.5", "integer"), ("abc", "integer"), ("", "integer")])
def test_positive_int_rejects(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        options.positive_int(text)


@pytest.mark.parametrize("text, value", [("0", 0), ("1", 1), ("42", 42)])
def test_non_negative_int_accepts_zero_and_up(text, value):
    assert options.non_negative_int(text) == value


@pytest.mark.parametrize("text, message", [("-1", "negative"), ("2.0", "integer"), ("x", "integer")])
def test_non_negative_int_rejects(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        options.non_negative_int(text)


@pytest.mark.parametrize("text, value", [
    ("1", [1]),
    ("1,8,32", [1, 8, 32]),
    ("1, 8 ,32", [1, 8, 32]),
    ("4,,8,", [4, 8]),          # blanks skipped
    (",2", [2]),
    ("8,8", [8, 8]),            # order and repeats kept as given
])
def test_int_list_accepts(text, value):
    assert options.int_list(text) == value


@pytest.mark.parametrize("text, message", [
    ("", "at least one"),
    (",", "at least one"),
    (" , ", "at least one"),
    ("1,0", "at least 1, got 0"),
    ("-2,4", "at least 1, got -2"),
    ("1,a", "comma-separated integers"),
    ("1.5", "comma-separated integers"),
])
def test_int_list_rejects(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        options.int_list(text)


def test_folder():
    assert options.folder("results/x") == Path("results/x")
    for text in ("", "   "):
        with pytest.raises(argparse.ArgumentTypeError, match="empty"):
            options.folder(text)


ALLOWED = ["sdpa-flash", "sdpa-math", "triton", "eager"]
ALIASES = {"sdpa": ["sdpa-flash", "sdpa-math"]}


def test_names_in_given_order_with_aliases_expanded_and_duplicates_dropped():
    assert options.names("triton", ALLOWED, "attn") == ["triton"]
    assert options.names("eager, triton", ALLOWED, "attn") == ["eager", "triton"]
    assert options.names("triton,sdpa", ALLOWED, "attn", ALIASES) == ["triton", "sdpa-flash", "sdpa-math"]
    assert options.names("sdpa-math,sdpa,triton,triton", ALLOWED, "attn", ALIASES) == \
        ["sdpa-math", "sdpa-flash", "triton"]
    assert options.names("triton,,eager,", ALLOWED, "attn") == ["triton", "eager"]


def test_names_unknown_is_a_user_error_naming_the_choices():
    with pytest.raises(UserError) as info:
        options.names("triton,flash", ALLOWED, "attn")
    message = str(info.value)
    assert "unknown attn 'flash'" in message
    assert "sdpa-flash, sdpa-math, triton, eager" in message


def test_names_alias_only_known_when_given():
    with pytest.raises(UserError, match="unknown attn 'sdpa'"):
        options.names("sdpa", ALLOWED, "attn")


@pytest.mark.parametrize("text", ["", ",", " , "])
def test_names_empty_is_a_user_error(text):
    with pytest.raises(UserError, match="--attn needs at least one value"):
        options.names(text, ALLOWED, "attn")


def parser_with_everything():
    parser = argparse.ArgumentParser(prog="t", exit_on_error=False)
    options.add_device(parser)
    options.add_model(parser, {"cuda": "big-model", "cpu": "tiny-model"})
    options.add_out(parser)
    options.add_seed(parser)
    options.add_progress(parser)
    options.add_ceilings(parser)
    return parser


def test_shared_options_defaults():
    args = parser_with_everything().parse_args([])
    assert args.device == "auto"
    assert args.model == "auto"
    assert args.out == options.DEFAULT_OUT == Path("results/runs")
    assert args.seed == 0
    assert args.progress is True
    assert args.ceilings is True


def test_shared_options_set():
    args = parser_with_everything().parse_args(
        ["--device", "cpu", "--model", "m", "--out", "o/p", "--seed", "5", "--no-progress", "--no-ceilings"])
    assert (args.device, args.model, args.out, args.seed) == ("cpu", "m", Path("o/p"), 5)
    assert args.progress is False and args.ceilings is False


def test_shared_options_help_mentions_defaults():
    text = parser_with_everything().format_help()
    assert "big-model on GPU" in text and "tiny-model on CPU" in text
    assert "weights and prompts" in text


def test_out_refuses_an_empty_folder_at_parse_time(capsys):
    parser = argparse.ArgumentParser(prog="t")
    options.add_out(parser)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--out", ""])
    assert info.value.code == 2
    assert "empty" in capsys.readouterr().err


def test_check_writable_creates_nested_folders(tmp_path):
    out = tmp_path / "a" / "b" / "c"
    options.check_writable(out)
    assert out.is_dir()
    options.check_writable(out)  # already there: fine


def test_check_writable_under_a_file_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot create output folder"):
        options.check_writable(tmp_path / "file" / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_writable_read_only_folder_is_a_user_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError, match="not writable"):
            options.check_writable(ro)
        with pytest.raises(UserError, match="cannot create output folder"):
            options.check_writable(ro / "sub")
    finally:
        ro.chmod(0o755)


def test_check_writable_reports_a_folder_it_may_not_write(tmp_path, monkeypatch):
    """The same check as above, runnable as root: the folder exists but access says no."""
    monkeypatch.setattr(options.os, "access", lambda path, mode: mode != os.W_OK)
    with pytest.raises(UserError, match=r"output folder .* is not writable"):
        options.check_writable(tmp_path)


def test_command_line_reproduces_the_namespace_and_skips_what_it_is_told():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="auto")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--sizes", type=options.int_list, default=[1])
    parser.add_argument("--nproc", type=options.positive_int, default=None)
    parser.add_argument("--fsdp", action="store_true")
    parser.add_argument("--no-ceilings", dest="ceilings", action="store_false")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--out", type=options.folder, default=Path("results/runs"))
    args = parser.parse_args(["--model", "tiny", "--lr", "3e-3", "--sizes", "1,8", "--nproc", "2", "--fsdp",
                              "--no-ceilings", "--offset=-3", "--out", "/tmp/x y"])
    words = options.command_line(parser, args)
    assert words == ["--model", "tiny", "--lr", "0.003", "--sizes", "1,8", "--nproc", "2", "--fsdp",
                     "--no-ceilings", "--offset=-3", "--out", "/tmp/x y"]
    assert vars(parser.parse_args(words)) == vars(args)
    assert "--nproc" not in options.command_line(parser, args, skip=("nproc",))
    assert options.command_line(parser, parser.parse_args([])) == []  # defaults are not written
