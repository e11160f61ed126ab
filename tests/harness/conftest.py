"""Fixtures the sweep tests share: the root parser the CLI hands to the sweep (with and without the
commands' ``validate`` checks), a small sweep file, and a stand-in subcommand with a ``validate``."""

import argparse
from pathlib import Path

import pytest

from harness import cli, options, sweep
from workloads.errors import UserError


@pytest.fixture(scope="session")
def parser():
    """The root ``llmbench`` parser, as the CLI hands it to the sweep."""
    return cli.build_parser()


def without_validate(root: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``root`` with every subcommand's ``validate`` default removed (parsing still applies)."""
    def strip(parser):
        for sub in sweep.parser_parts(parser)[0].values():
            sub.set_defaults(validate=None)
            strip(sub)

    strip(root)
    return root


@pytest.fixture(scope="session")
def unchecked_parser():
    """The root parser without the commands' ``validate``: for tests about something else (script quoting,
    a point that must fail at run time) whose values the real checks would refuse at plan time."""
    return without_validate(cli.build_parser())


@pytest.fixture(scope="session")
def base_sweep() -> str:
    """A 2 x 2 x 2 decode sweep on tiny presets; ``{out}`` stands for its results folder."""
    return (Path(__file__).parent / "sweep_base.toml").read_text()


def work_validate(args) -> None:
    """The stand-in ``work`` command's checks: a known name, size at most 100, and a cross-field rule."""
    if args.name not in ("alpha", "beta"):
        raise UserError(f"unknown name {args.name!r}; choose alpha or beta")
    if args.size > 100:
        raise UserError(f"--size {args.size} is over 100")
    if args.fast and args.size == 3:
        raise UserError("--fast needs a size other than 3")


def add_work(root: argparse.ArgumentParser, validate=work_validate, **extra) -> argparse.ArgumentParser:
    """Add a stand-in subcommand ``work`` to ``root`` (options of every action kind the sweep handles)."""
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    w = sub.add_parser("work")
    w.add_argument("--size", type=options.positive_int, default=1)
    w.add_argument("--name", default="alpha")
    w.add_argument("--mode", choices=("a", "b"), default="a")
    w.add_argument("--sizes", type=options.int_list, default=[1])
    w.add_argument("--fast", action="store_true")
    w.add_argument("--no-slow", dest="slow", action="store_false")
    w.add_argument("--offset", type=int, default=0)
    w.add_argument("--tag", action="append", default=None)
    for name, kwargs in extra.items():
        w.add_argument(f"--{name.replace('_', '-')}", **kwargs)
    w.add_argument("--out")
    if validate is not None:
        w.set_defaults(validate=validate)
    return root


@pytest.fixture()
def work_parser():
    """A fresh root parser with the stand-in ``work`` subcommand."""
    return add_work(cli.build_parser())
