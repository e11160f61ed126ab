"""Shared command-line pieces: argument types, the options many subcommands share, and checks.

Every subcommand module (``harness.commands``) builds its parser from these, so
an option means the same thing and says the same in ``--help`` everywhere, and
a value is rejected the same way: at parse time (exit 2, usage line) for a
malformed value, as a ``UserError`` (exit 2, one line) for a value that only the
run can judge. Nothing here imports torch, so ``llmbench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

from workloads.errors import UserError

DEFAULT_OUT = Path("results/runs")


class Parser(argparse.ArgumentParser):
    """argparse with a malformed value or unknown option reported as one line (what was wrong, and
    where the options are listed), exit code 2, instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
INT_LIST = "N[,N...]"


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer of at least 1 (sizes, counts of timed work)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0 (warm-up counts, indices)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def repeats(text: str) -> int | None:
    """``auto`` (None: as many as the confidence interval needs) or a count of at least 1."""
    return None if text.strip().lower() == "auto" else positive_int(text)


def positive_float(text: str) -> float:
    """A finite number above 0 (seconds, rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def int_list(text: str) -> list[int]:
    """Comma-separated integers, each at least 1: ``1,8,32``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    small = [v for v in values if v < 1]
    if small:
        raise argparse.ArgumentTypeError(f"every value must be at least 1, got {small[0]}")
    return values


def names(text: str, allowed, what: str, aliases: dict | None = None) -> list[str]:
    """A comma-separated list of names from ``allowed``, in order, duplicates dropped; an alias
    stands for several names (``sdpa`` for every SDPA backend)."""
    out = []
    for name in (n.strip() for n in text.split(",")):
        if not name:
            continue
        for item in (aliases or {}).get(name, [name]):
            if item not in allowed:
                raise UserError(f"unknown {what} {item!r}; choose from {', '.join(allowed)}")
            if item not in out:
                out.append(item)
    if not out:
        raise UserError(f"--{what} needs at least one value")
    return out


def add_device(parser, extra: str = "") -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N" + extra)


def add_model(parser, defaults: dict[str, str]) -> None:
    parser.add_argument("--model", default="auto",
                        help="preset name (see `llmbench models`) or local model directory; "
                             f"auto = {defaults['cuda']} on GPU, {defaults['cpu']} on CPU")


def folder(text: str) -> Path:
    """A folder path; an empty one is refused (``Path("")`` would quietly mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder path, got an empty string")
    return Path(text)


def add_out(parser) -> None:
    parser.add_argument("--out", type=folder, default=DEFAULT_OUT, help="folder for records.jsonl")


def seed(text: str) -> int:
    """A random seed from 0 to 2**32 - 1 (what every generator here accepts)."""
    value = _int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be from 0 to {2**32 - 1}, got {value}")
    return value


def add_seed(parser, what: str = "weights and prompts") -> None:
    parser.add_argument("--seed", type=seed, default=0, help=f"seed for the {what}")


def add_progress(parser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def add_ceilings(parser, when: str = "first", lacks: str = "MBU, MFU and bound") -> None:
    """``--no-ceilings`` (skip them) and ``--remeasure`` (measure them again even when the stored ones
    match this machine's fingerprint, e.g. after they were taken on a loaded machine)."""
    parser.add_argument("--no-ceilings", dest="ceilings", action="store_false",
                        help=f"do not measure missing ceilings {when} (records then lack {lacks})")
    parser.add_argument("--remeasure", dest="remeasure", action="store_true",
                        help=f"measure the ceilings again {when}, even when stored ones match this machine's "
                             "fingerprint (device, torch, CPU threads or GPU clocks and power limit)")


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace, skip=()) -> list[str]:
    """The options of ``parser`` (one subcommand's) that reproduce ``args``, but those whose dest is in
    ``skip``: the words to run the same command again in another process (``finetune --nproc`` starts
    its processes with them). Only options whose value differs from the default are written; flags
    as flags, lists comma-separated."""
    words = []
    for action in parser._actions:  # argparse lists its options nowhere else
        long = [o for o in action.option_strings if o.startswith("--")]
        if not long or action.dest in ("help", argparse.SUPPRESS, *skip) or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value == action.default:
            continue
        if action.nargs == 0:  # store_true / store_false / store_const: the flag sets the value
            words.append(long[0])
        elif value is not None:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            words += [long[0], text] if not text.startswith("-") else [f"{long[0]}={text}"]
    return words


@functools.cache
def model_once(model: str):
    """``workloads.presets.resolve_model``, once per name: a sweep validates thousands of points over a
    few models (the spec is only read, never built from, on that path)."""
    from workloads.presets import resolve_model

    return resolve_model(model)


def check_writable(out: Path) -> None:
    """Create ``out`` (and its parents) or say why not, before any work starts."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"output folder {out} is not writable")
