"""Starting N local processes of an ``llmbench`` command under torchrun, for the commands with ``--nproc``.

``llmbench finetune --nproc N`` and ``llmbench peak --nproc N`` check everything
first, then this process becomes torchrun's elastic agent
(``torch.distributed.run``, exactly as ``torchrun --standalone --nproc-per-node
N --max-restarts 0``) and starts ``python -m harness COMMAND ...`` with the same
options in each process; the command line is printed first, so it can be run by
hand. Ctrl-C stops the processes and ends as every Ctrl-C does (one line, exit
130); the signal handlers the agent installs are put back afterwards. Each
process finds itself a rank (``workloads.distributed.Dist``) and rank 0
writes the records. On a CPU the cores are shared out (``OMP_NUM_THREADS``) so N
processes never oversubscribe them; on GPUs each process takes the GPU of its
local rank.

The processes' command line leaves ``--nproc`` out: torchrun's own parser takes
an option after the module that is a prefix of one of its own (``--nproc`` of
``--nproc-per-node``) and stops with "ambiguous option". Under torchrun (started
by hand, or by ``srun`` on each node of a multi-node SLURM job), a ``--nproc``
that reaches the command must equal what torchrun started on the node.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys

from harness import options
from workloads.errors import UserError

AGENT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)  # torchrun's agent handles these


def processes(nproc: int | None, dist) -> int:
    """How many processes this command starts: 1 under torchrun (it started them; ``nproc``, when given,
    must match), else ``nproc`` (default 1). ``dist``: this process's ``workloads.distributed.Dist``."""
    if dist.under_launcher():
        if nproc not in (None, dist.local_world_size):
            raise UserError(f"--nproc {nproc}, but torchrun started {dist.local_world_size} process(es) on this "
                            "node: give the same number to both (or leave --nproc out under torchrun)")
        return 1
    return nproc or 1


def check_gpus(nproc: int, device) -> None:
    """Whether ``nproc`` local processes can run on ``device``: one GPU each, counted from the first."""
    import torch

    if device.type == "cuda":
        count = torch.cuda.device_count()
        if device.index not in (None, 0):
            raise UserError(f"--nproc gives each process its own GPU (0 to {nproc - 1}); pick the GPUs with "
                            f"CUDA_VISIBLE_DEVICES instead of --device {device}")
        if nproc > count:
            raise UserError(f"--nproc {nproc} needs {nproc} GPUs, one per process; this node shows {count}")


def torchrun_words(command: str, args, nproc: int) -> tuple[list[str], list[str]]:
    """(torchrun's options, the command's words): ``args`` re-written as a command line, without --nproc."""
    argv = [*command.split(), *options.command_line(args.command_parser, args, skip=("nproc",))]
    return ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "-m", "harness"], argv


def local(command: str, args, nproc: int, device) -> int:
    """Run ``llmbench COMMAND`` with ``args`` in ``nproc`` processes under torchrun's elastic agent (this
    process); 0 when every one succeeds, else 1 with one line naming the first that failed."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    words, argv = torchrun_words(command, args, nproc)
    handlers = {sig: signal.getsignal(sig) for sig in AGENT_SIGNALS}  # the agent replaces them; put them back
    threads = os.environ.get("OMP_NUM_THREADS")
    if device.type == "cpu" and threads is None:  # share the cores, never oversubscribe (the processes inherit it)
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    print("+ torchrun " + shlex.join([*words, *argv]), file=sys.stderr, flush=True)
    launcher = torchrun.parse_args(words)  # the command's own words stay out of torchrun's parser
    launcher.training_script_args = argv
    try:
        torchrun.run(launcher)
    except ChildFailedError as exc:
        failures = sorted(exc.failures.items())
        rank, failure = failures[0]
        print(f"llmbench {command}: {len(failures)} of {nproc} processes failed (rank {rank}: exit code "
              f"{failure.exitcode}); see their output above", file=sys.stderr)
        return 1
    except SignalException as exc:  # the agent stopped its processes first
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None  # Ctrl-C: the CLI's one line and exit code 130
        print(f"llmbench {command}: stopped by {exc.sigval.name}; the {nproc} processes were stopped",
              file=sys.stderr)
        return 128 + exc.sigval.value
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0
