"""Sweep files: a TOML matrix expanded into points, each one plain ``llmbench`` command line.

A sweep file names a workload (any ``llmbench`` subcommand with an ``--out``
option, e.g. ``decode`` or ``kernel attention``), fixed ``[params]``, a
``[matrix]`` of axes whose every combination is a point, ``[[exclude]]`` rules
that drop combinations and ``[[include]]`` points added as written, and a
``[slurm]`` section (see ``slurm.backend``). A workload whose subcommand has
``--nproc`` (finetune, peak) or ``--tp`` (decode) runs several processes; its
points get that count from the GPUs per node when they do not set it, and only
``--nproc`` ones can span nodes. Any other workload is one process on one GPU and
one node: ``gpus_per_task`` > 1 or ``nodes`` > 1 with it is an error, never GPUs
quietly left idle. Keys are the subcommand's long
options with ``-`` written ``_``. Planning checks every point in full before
anything is written or submitted: each value against its option's type and
choices, then the point's whole command line through the real parser (required
arguments, values read as options), then the subcommand's own ``validate``
(``set_defaults(validate=...)``: presets exist, values in range, precisions
known, without building anything; see ``PointCheck``). A bad point is one line
naming its index and values. A point's id is a hash of its workload and
parameters: the same point has the same id in every sweep.

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
import contextlib
import difflib
import hashlib
import io
import itertools
import json
import os
import re
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
NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")  # what argparse reads as a value, not an option
SHOWN_CHARS = 60  # of one value, in an error that names a point


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
        if self.words[0] == "sweep":
            raise UserError(f"`{prefix}` cannot be a sweep point: a point is one benchmark, e.g. workload = \"decode\"")
        if "out" not in self.actions:
            more = f" (workload = \"{workload} {next(iter(subcommands))}\"?)" if subcommands else ""
            raise UserError(f"`{prefix}` has no --out option, so it cannot run as a sweep point{more}")
        positionals = [a.metavar or a.dest for a in parser._actions
                       if not a.option_strings and a.nargs not in ("?", "*", argparse.SUPPRESS)]
        if positionals:
            raise UserError(f"`{prefix}` needs the argument(s) {', '.join(map(str, positionals))} on its command "
                            "line, which a sweep point cannot pass: it cannot run as a sweep point")
        # the option that sets how many processes a point runs: --nproc (finetune, peak) or --tp (decode)
        self.processes = next((key for key in ("nproc", "tp") if key in self.actions), None)
        self._cache: dict = {}

    def args(self, key: str, value) -> list[str]:
        """The command-line words for one parameter, checked the way the subcommand's parser checks them."""
        return self.convert(key, value)[0]

    def convert(self, key: str, value) -> tuple[list[str], tuple | None]:
        """The words for one parameter and what parsing them sets: ``(dest, value)``, or ``None`` where
        only a full parse can tell (an action other than a plain store, a value starting with ``-``)."""
        cache_key = (key, type(value).__name__, value)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._convert(key, value)
        return self._cache[cache_key]

    def _convert(self, key: str, value) -> tuple[list[str], tuple | None]:
        if key in SET_BY_SWEEP:
            raise UserError(f"{key!r} is set by the sweep itself; the results folder is the top-level out = \"...\"")
        if key not in self.actions:
            raise UserError(f"`llmbench {self.workload}` has no option --{key.replace('_', '-')}"
                            f"{_suggest(key, self.actions)}")
        option, action = self.actions[key]
        if action.nargs == 0:
            if not isinstance(value, bool):
                raise UserError(f"{key} is a flag ({option}): write true or false, got {value!r}")
            if not value:
                return [], ()
            simple = isinstance(action, argparse._StoreConstAction)  # store_true / store_false / store_const
            return [option], ((action.dest, action.const) if simple else None)
        if isinstance(value, list):
            raise UserError(f"{key} = {value!r} is a list: sweep axes go in [matrix]; to pass one "
                            "comma-separated value write it as a string, e.g. \"1,8\"")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UserError(f"{key} = {value!r}: expected a string or a number")
        text = str(value)
        if text.startswith("-") and not NEGATIVE_NUMBER.fullmatch(text):
            raise UserError(f"{key} = {value!r} starts with '-', so {option} would read it as an option, not as "
                            "its value")
        converted = text
        if action.type is not None:
            try:
                converted = action.type(text)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
                raise UserError(f"{key} = {value!r}: {exc or 'invalid value'}") from None
        if action.choices is not None and converted not in action.choices:
            raise UserError(f"{key} = {value!r}: choose from {', '.join(map(str, action.choices))}")
        simple = type(action) is argparse._StoreAction and action.nargs is None and not text.startswith("-")
        return [option, text], ((action.dest, converted) if simple else None)


class PointCheck:
    """Checks whole points against the root parser: each point's full command line is parsed (``parse_args``,
    its usage text kept off the terminal), then handed to the subcommand's ``validate`` when it has one.

    Parsing is what makes this slow (about 0.2 ms a point), so a full parse runs once per *shape* (the
    options a point sets, in order, all plain ``store``/``store_const`` actions with ordinary values):
    argparse treats every point of one shape alike but for the values it stores, which ``Options`` has
    already converted and checked exactly as argparse does, so the other points of the shape get a copy
    of that parse with their own values set. Anything else (a value starting with ``-``, an ``append``
    or custom action) is parsed in full.

    A ``validate`` may be the slow part (it may look a preset up), so its outcome is cached, per distinct
    command line and by what it read: the first call notes which attributes it read and their values, and
    a later point whose values of those attributes are the same gets the same outcome without a call (a
    ``validate`` is a function of what it reads; one that reads ``vars(args)`` is called every time)."""

    def __init__(self, root: argparse.ArgumentParser, out: str):
        self.root = root
        self.out = ["--out", out]
        self._templates: dict[tuple, argparse.Namespace] = {}
        self._results: dict[tuple, str | None] = {}
        self._memo: dict = {}  # validate -> {names read: {their values: outcome}}

    def parse(self, argv: list[str]) -> argparse.Namespace:
        """``root.parse_args(argv + --out)``, or ``UserError`` with argparse's message (no usage, no exit)."""
        sink = io.StringIO()
        try:
            with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
                args = self.root.parse_args([*argv, *self.out])
        except SystemExit as exc:
            if exc.code == 0:
                raise UserError("the command line would print the help and exit") from None
            lines = [line for line in sink.getvalue().splitlines() if line.strip()]
            message = lines[-1].split(": error: ", 1)[-1] if lines else f"exit code {exc.code}"
            raise UserError(message) from None
        except argparse.ArgumentError as exc:
            raise UserError(str(exc)) from None
        args.parser = self.root  # as the CLI hands it to a command
        return args

    def namespace(self, workload: str, argv: list[str], sets: list) -> argparse.Namespace:
        """The namespace ``parse`` would give for the point ``argv`` of ``workload``, whose parameters set
        ``sets`` ((dest, value) pairs, ``None`` where only a full parse can tell)."""
        if any(s is None for s in sets):
            return self.parse(argv)
        shape = (workload, *(word for word in argv if word.startswith("--")))
        template = self._templates.get(shape)
        if template is None:
            template = self._templates[shape] = self.parse(argv)
            return template
        args = argparse.Namespace(**vars(template))
        for dest, value in sets:
            setattr(args, dest, value)
        return args

    def check(self, workload: str, argv: list[str], sets: list) -> str | None:
        """What is wrong with the point ``argv`` of ``workload``, or ``None``."""
        key = tuple(argv)
        if key not in self._results:
            try:
                args = self.namespace(workload, argv, sets)
                validate = getattr(args, "validate", None)
                self._results[key] = self.validate(validate, args) if callable(validate) else None
            except UserError as exc:
                self._results[key] = _one_line(exc)
        return self._results[key]

    def validate(self, validate, args: argparse.Namespace) -> str | None:
        """``validate(args)``'s complaint, or ``None``; from the cache when the attributes it read before
        hold the same values now."""
        memo = self._memo.setdefault(validate, {})
        for names, outcomes in memo.items():
            try:
                values = tuple(_frozen(getattr(args, name, _MISSING)) for name in names)
            except TypeError:
                continue
            if values in outcomes:
                return outcomes[values]
        reading = _Reading(**vars(args))
        try:
            validate(reading)
            outcome = None
        except (UserError, argparse.ArgumentTypeError) as exc:
            outcome = _one_line(exc)
        reads = reading.reads()
        if reads is not None:
            names = tuple(dict.fromkeys(reads))
            try:
                memo.setdefault(names, {})[tuple(_frozen(getattr(args, n, _MISSING)) for n in names)] = outcome
            except TypeError:  # a value that cannot be a key: no cache for this one
                pass
        return outcome


_MISSING = object()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _frozen(value):
    """A hashable, typed stand-in for a namespace value (1, 1.0 and True stay apart); TypeError if none."""
    if isinstance(value, (list, tuple)):
        return type(value), tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return dict, tuple((_frozen(k), _frozen(v)) for k, v in value.items())
    hash(value)
    return type(value), value


class _Reading(argparse.Namespace):
    """A namespace that notes the names of the attributes read from it, in order (what a ``validate``
    looked at); reading ``__dict__`` (``vars(args)``) reads everything, so nothing can be cached."""

    __slots__ = ("_read",)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_read", [])

    def __getattribute__(self, name):
        if name == "__dict__" or not name.startswith("__"):
            object.__getattribute__(self, "_read").append(name)
        return object.__getattribute__(self, name)

    def reads(self) -> list[str] | None:
        read = object.__getattribute__(self, "_read")
        return None if "__dict__" in read else [n for n in read if n not in ("_read", "reads")]


def describe(index: int, workload: str, params: dict) -> str:
    """``point 7 (decode: model = "x", batch_size = 2)``: a point as the sweep file wrote it."""
    def shown(value) -> str:
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."

    values = ", ".join(f"{key} = {shown(value)}" for key, value in params.items())
    return f"point {index} ({workload}{': ' + values if values else ''})"


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
    if not isinstance(value, (str, int, float, bool)):
        raise UserError(f"{where}.{key} = {value}: expected a string, a number or true/false "
                        "(a TOML date or time is not an option value; quote it)")


def _single_process(workload: str, slurm: SlurmOptions) -> None:
    """A workload of one process (its subcommand has no ``--nproc``) must not be given GPUs or nodes it
    would leave idle."""
    if slurm.nodes > 1:
        raise UserError(f"[slurm] nodes = {slurm.nodes}, but `llmbench {workload}` runs as one process on one "
                        "node; multi-node points need a multi-process workload (finetune or peak, with nproc)")
    if slurm.gpus > 1:
        raise UserError(f"[slurm] gpus_per_task = {slurm.gpus}, but `llmbench {workload}` runs one process on one "
                        f"GPU: the other {slurm.gpus - 1} would sit idle. Set gpus_per_task = 1, or sweep a "
                        "multi-process workload (finetune or peak with nproc, decode with tp)")


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
    for workload in [top_workload, *matrix.get("workload", []), *(r["workload"] for r in include if "workload" in r)]:
        if workload is not None and not (isinstance(workload, str) and workload.strip()):
            raise UserError(f"workload must be a subcommand name such as \"decode\", got {workload!r}")
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
    checker = PointCheck(parser, str(Path(folder).absolute()))
    points, seen, bad = [], set(), []
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
        argv, sets = list(opts.words), []
        for key, value in raw.items():
            words, assignment = opts.convert(key, value)
            if words:  # a flag set to false adds nothing
                argv += words
                sets.append(assignment)
        nproc, key = 1, opts.processes
        if key is None:
            _single_process(workload, slurm)
        else:
            nproc = int(raw.get(key, slurm.gpus or 1))
            if key not in raw and nproc > 1:
                words, assignment = opts.convert(key, nproc)
                argv += words
                sets.append(assignment)
            if slurm.gpus and nproc > slurm.gpus:
                raise UserError(f"{describe(len(points), workload, raw)} asks for {key} = {nproc} but [slurm] gives "
                                f"each node {slurm.gpus} GPU(s) (gpus_per_task / gpus_per_node)")
            if slurm.nodes > 1 and key != "nproc":
                raise UserError(f"[slurm] nodes = {slurm.nodes}, but `llmbench {workload}` splits a model over the "
                                f"GPUs of one node (--{key}); multi-node points need --nproc (finetune, peak)")
        problem = checker.check(workload, argv, sets)
        if problem is not None:
            bad.append((len(points), workload, raw, problem))
        points.append(Point(len(points), pid, workload, raw, argv, nproc))
    if not points:
        raise UserError("every combination of the matrix is excluded: the sweep has no points")
    if bad:
        index, workload, raw, problem = bad[0]
        more = f" ({len(bad) - 1} more of the {len(points)} points are refused too)" if len(bad) > 1 else ""
        raise UserError(f"{describe(index, workload, raw)}: {problem}{more}")
    return Sweep(name, Path(folder).absolute(), points, slurm, _table(data, "slurm"))


def load(path: Path, parser: argparse.ArgumentParser, out: Path | None = None) -> Sweep:
    """Read the sweep file at ``path`` and expand it (see ``from_dict``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UserError(f"no sweep file at {path}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}); a sweep file is TOML") from None
    except OSError as exc:
        raise UserError(f"cannot read the sweep file {str(path)[:200]}: {exc.strerror or exc}") from None
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
