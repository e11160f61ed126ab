"""Sweep files: a TOML matrix expanded into points, each one plain ``llmbench`` command line.

A sweep file names a workload (any ``llmbench`` subcommand with an ``--out``
option, e.g. ``decode`` or ``kernel attention``), fixed ``[params]``, a
``[matrix]`` of axes whose every combination is a point, ``[[exclude]]`` rules
that drop combinations and ``[[include]]`` points added as written, and a
``[slurm]`` section (see ``slurm.backend``). Keys are the subcommand's long
options with ``-`` written ``_``; they are checked against the subcommand's own
argument parser when the sweep is planned, so a typo fails before anything runs.
A point's id is a hash of its workload and parameters: the same point has the
same id in every sweep.

This module only turns a file into points. It is handed the root ``llmbench``
parser (``load(path, parser)``) rather than building one, so it depends on no
subcommand and the command line stays the one place that knows them all. What
happens to the points next (the sweep's folder, running a task, the report)
is ``harness.sweep_tasks``; the ``llmbench sweep`` steps are
``harness.commands.sweep``.

``python -m harness.sweep STEP ...`` is kept for the sweep folders whose
``sweep.sbatch`` was rendered before the steps moved into the CLI: it replaces
itself with ``python -m harness sweep STEP ...`` (see the end of this file).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from slurm import backend
from slurm.backend import SlurmOptions
from workloads.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SWEEP_KEYS = ("name", "workload", "out", "params", "matrix", "include", "exclude", "slurm")
SET_BY_SWEEP = ("out", "help")


@dataclass(frozen=True)
class Point:
    index: int
    id: str
    workload: str
    params: dict
    argv: list[str]  # the subcommand and its options, without --out
    nproc: int = 1  # processes; more than one launches under torchrun


@dataclass
class Sweep:
    name: str
    out: Path
    points: list[Point]
    slurm: SlurmOptions
    slurm_table: dict  # as written, kept in the manifest for --resume


def _suggest(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def point_id(workload: str, params: dict) -> str:
    text = json.dumps({"workload": workload, **params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def parser_parts(parser: argparse.ArgumentParser) -> tuple[dict, dict]:
    """A parser's subcommands (name -> parser) and long options (sweep key -> (option, action)).

    argparse has no public way to list what a parser accepts, so this is the one
    place that reads its private ``_actions`` and ``_SubParsersAction``.
    """
    subcommands, options = {}, {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subcommands = action.choices
        for option in action.option_strings:
            if option.startswith("--"):
                options[option[2:].replace("-", "_")] = (option, action)
    return subcommands, options


class Options:
    """The long options of one ``llmbench`` subcommand, read from its real argument parser."""

    def __init__(self, workload: str, root: argparse.ArgumentParser):
        parser, prefix = root, "llmbench"
        for word in workload.split() or [""]:
            commands = parser_parts(parser)[0]
            if word not in commands:
                known = ", ".join(c for c in commands if c != "sweep") or "no subcommands"
                raise UserError(f"unknown workload {workload!r}{_suggest(word, commands)}: `{prefix}` has {known}")
            parser, prefix = commands[word], f"{prefix} {word}"
        self.workload = workload
        self.words = workload.split()
        subcommands, self.actions = parser_parts(parser)
        if "out" not in self.actions:
            more = f" (workload = \"{workload} {next(iter(subcommands))}\"?)" if subcommands else ""
            raise UserError(f"`{prefix}` has no --out option, so it cannot run as a sweep point{more}")
        self.distributed = "nproc" in self.actions
        self._cache: dict = {}

    def args(self, key: str, value) -> list[str]:
        """The command-line words for one parameter, checked the way the subcommand's parser checks them."""
        cache_key = (key, type(value).__name__, value)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._convert(key, value)
        return self._cache[cache_key]

    def _convert(self, key: str, value) -> list[str]:
        if key in SET_BY_SWEEP:
            raise UserError(f"{key!r} is set by the sweep itself; the results folder is the top-level out = \"...\"")
        if key not in self.actions:
            raise UserError(f"`llmbench {self.workload}` has no option --{key.replace('_', '-')}"
                            f"{_suggest(key, self.actions)}")
        option, action = self.actions[key]
        if action.nargs == 0:
            if not isinstance(value, bool):
                raise UserError(f"{key} is a flag ({option}): write true or false, got {value!r}")
            return [option] if value else []
        if isinstance(value, list):
            raise UserError(f"{key} = {value!r} is a list: sweep axes go in [matrix]; to pass one "
                            "comma-separated value write it as a string, e.g. \"1,8\"")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UserError(f"{key} = {value!r}: expected a string or a number")
        text = str(value)
        converted = text
        if action.type is not None:
            try:
                converted = action.type(text)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
                raise UserError(f"{key} = {value!r}: {exc or 'invalid value'}") from None
        if action.choices is not None and converted not in action.choices:
            raise UserError(f"{key} = {value!r}: choose from {', '.join(map(str, action.choices))}")
        return [option, text]


def _table(data: dict, key: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"[{key}] must be a table")
    return value


def _rules(data: dict, key: str) -> list[dict]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) and v for v in value):
        raise UserError(f"{key} must be written as [[{key}]] tables of key = value")
    return value


def _scalar(where: str, key: str, value) -> None:
    if isinstance(value, (dict, list)):
        raise UserError(f"{where}.{key} = {value!r}: expected one value")


def from_dict(data: dict, parser: argparse.ArgumentParser, out: Path | None = None) -> Sweep:
    """Check a parsed sweep file against the root ``llmbench`` parser and expand it into points
    (``out``: the command line's --out, over the file's)."""
    unknown = [k for k in data if k not in SWEEP_KEYS]
    if unknown:
        raise UserError(f"unknown key {unknown[0]!r} in the sweep file{_suggest(unknown[0], SWEEP_KEYS)}; "
                        f"known: {', '.join(SWEEP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not backend.WORD.fullmatch(name):
        raise UserError('the sweep needs a name = "..." of letters, digits, "_", ".", "+" or "-"')
    params, matrix = _table(data, "params"), _table(data, "matrix")
    include, exclude = _rules(data, "include"), _rules(data, "exclude")
    slurm = SlurmOptions.from_table(_table(data, "slurm"))
    folder = str(out) if out else data.get("out", f"results/runs/sweeps/{name}")
    if not isinstance(folder, str) or not folder or backend.CONTROL.search(folder) or "%" in folder:
        raise UserError(f"out must be a folder path without '%' or control characters, got {folder!r}")
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"matrix.{key} must be a non-empty list of values, got {values!r}")
        for value in values:
            _scalar("matrix", key, value)
        if key in params:
            raise UserError(f"{key} is both in [params] and in [matrix]")
    for key, value in params.items():
        _scalar("params", key, value)
    for rule in include:
        for key, value in rule.items():
            _scalar("include", key, value)
    for rule in exclude:
        for key in rule:
            if key not in matrix:
                raise UserError(f"exclude rule key {key!r} is not a matrix axis{_suggest(key, matrix)}")
    if not matrix and not include:
        raise UserError("the sweep has an empty matrix: add [matrix] axes or [[include]] points")
    top_workload = data.get("workload")
    if top_workload is not None and not isinstance(top_workload, str):
        raise UserError(f"workload must be a subcommand name such as \"decode\", got {top_workload!r}")
    if "workload" in params:
        raise UserError("set the workload with the top-level workload = \"...\", not in [params]")

    def combos():
        keys = list(matrix)
        excludes = [{k: v if isinstance(v, list) else [v] for k, v in rule.items()} for rule in exclude]
        for values in itertools.product(*matrix.values()) if matrix else ():
            combo = dict(zip(keys, values))
            if not any(all(combo[k] in allowed for k, allowed in rule.items()) for rule in excludes):
                yield {**params, **combo}
        for rule in include:
            yield {**params, **rule}

    options: dict[str, Options] = {}
    points, seen = [], set()
    for raw in combos():
        workload = raw.pop("workload", top_workload)
        if workload is None:
            raise UserError('the sweep needs a workload = "decode" (or a workload axis in [matrix])')
        if workload not in options:
            options[workload] = Options(workload, parser)
        opts = options[workload]
        pid = point_id(workload, raw)
        if pid in seen:
            continue
        seen.add(pid)
        argv = list(opts.words)
        for key, value in raw.items():
            argv += opts.args(key, value)
        nproc = 1
        if opts.distributed:
            nproc = int(raw.get("nproc", slurm.gpus_per_task or 1))
            if "nproc" not in raw and nproc > 1:
                argv += opts.args("nproc", nproc)
            if slurm.gpus_per_task and nproc > slurm.gpus_per_task:
                raise UserError(f"a point asks for nproc = {nproc} but [slurm] gpus_per_task is {slurm.gpus_per_task}")
        points.append(Point(len(points), pid, workload, raw, argv, nproc))
    if not points:
        raise UserError("every combination of the matrix is excluded: the sweep has no points")
    return Sweep(name, Path(folder).absolute(), points, slurm, _table(data, "slurm"))


def load(path: Path, parser: argparse.ArgumentParser, out: Path | None = None) -> Sweep:
    """Read the sweep file at ``path`` and expand it (see ``from_dict``)."""
    try:
        text = Path(path).read_text()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UserError(f"no sweep file at {path}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    return from_dict(data, parser, out)


if __name__ == "__main__":
    # Sweep folders rendered before the steps moved into the CLI have a sweep.sbatch that runs
    # `python -m harness.sweep task DIR --index I` (and collect.sbatch `... collect DIR`). Their
    # array tasks must keep working, but this module builds no parser and imports no command, so it
    # hands over to the real CLI. exec, not a child process: the SLURM task keeps one process, whose
    # pid, signals (SIGTERM at the time limit) and exit code are the task runner's own.
    os.execv(sys.executable, [sys.executable, "-m", "harness", "sweep", *sys.argv[1:]])
