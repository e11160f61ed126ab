"""Fixtures the sweep tests share: the root parser the CLI hands to the sweep, and a small sweep file."""

from pathlib import Path

import pytest

from harness import cli


@pytest.fixture(scope="session")
def parser():
    """The root ``llmbench`` parser, as the CLI hands it to the sweep."""
    return cli.build_parser()


@pytest.fixture(scope="session")
def base_sweep() -> str:
    """A 2 x 2 x 2 decode sweep on tiny presets; ``{out}`` stands for its results folder."""
    return (Path(__file__).parent / "sweep_base.toml").read_text()
