"""Starting N local processes under torchrun: how many, the GPUs they need, the command line they get
(without --nproc, which torchrun's parser would take), and one line when a process fails."""

import argparse
import os
import re
import signal
import threading
import time

import pytest
import torch

from harness import launch
from workloads.distributed import Dist
from workloads.errors import UserError


class Launched(Dist):
    @staticmethod
    def under_launcher() -> bool:
        return True


def test_processes_to_start():
    assert launch.processes(None, Dist()) == 1 and launch.processes(3, Dist()) == 3
    under = Launched(world_size=4, local_world_size=2, nodes=2)
    assert launch.processes(None, under) == 1 and launch.processes(2, under) == 1  # torchrun started them
    with pytest.raises(UserError, match="--nproc 4, but torchrun started 2 process"):
        launch.processes(4, under)


def test_gpus_one_per_process():
    launch.check_gpus(8, torch.device("cpu"))  # CPU processes share the cores
    with pytest.raises(UserError, match="pick the GPUs with CUDA_VISIBLE_DEVICES"):
        launch.check_gpus(2, torch.device("cuda", 1))
    if torch.cuda.device_count() < 64:
        with pytest.raises(UserError, match="--nproc 64 needs 64 GPUs, one per process"):
            launch.check_gpus(64, torch.device("cuda"))


def _args(**values):
    parser = argparse.ArgumentParser()
    parser.add_argument("--nproc", type=int, default=None)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--fsdp", action="store_true")
    return argparse.Namespace(command_parser=parser, **{"nproc": None, "steps": 1, "fsdp": False, **values})


def test_the_processes_command_line_leaves_nproc_to_torchrun():
    words, argv = launch.torchrun_words("finetune", _args(nproc=2, steps=5, fsdp=True), 2)
    assert words == ["--standalone", "--nproc-per-node=2", "--max-restarts=0", "-m", "harness"]
    assert argv == ["finetune", "--steps", "5", "--fsdp"]


def test_a_failing_process_is_one_line_and_exit_1(capfd, monkeypatch):
    """Two processes of a command that does not exist: each exits 2, the agent says so in one line (and the
    thread count it gave them does not stay in this process's environment)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    handlers = {sig: signal.getsignal(sig) for sig in launch.AGENT_SIGNALS}
    assert launch.local("no-such-command", _args(), 2, torch.device("cpu")) == 1
    assert "OMP_NUM_THREADS" not in os.environ
    assert {sig: signal.getsignal(sig) for sig in launch.AGENT_SIGNALS} == handlers  # Ctrl-C works here again
    err = capfd.readouterr().err
    assert "+ torchrun --standalone --nproc-per-node=2 --max-restarts=0 -m harness no-such-command" in err
    # the agent stops the other process at the first failure, so one or both are counted
    assert re.search(r"llmbench no-such-command: [12] of 2 processes failed \(rank [01]: exit code -?\d+\); see "
                     r"their output above", err)


def test_ctrl_c_stops_the_processes_and_is_a_keyboard_interrupt(monkeypatch):
    """SIGINT while two processes run (here: `sleep 60`): the agent stops them, and the command ends as every
    Ctrl-C does, with the handlers put back."""
    monkeypatch.setattr(launch, "torchrun_words", lambda command, args, nproc: (
        ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "--no-python", "sleep"], ["60"]))
    handlers = {sig: signal.getsignal(sig) for sig in launch.AGENT_SIGNALS}
    timer = threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            launch.local("finetune", _args(), 2, torch.device("cpu"))
    finally:
        timer.cancel()
    assert time.monotonic() - started < 50  # not the 60 s the processes would have slept
    assert {sig: signal.getsignal(sig) for sig in launch.AGENT_SIGNALS} == handlers
