"""pytest-benchmark suite set-up: the device under test, GPU-safe timing, and GPU facts in the
machine info that ``llmbench import-pytest-benchmark`` turns into the records' ``env``.

The benchmark files are named ``bench_*.py`` so the default test run does not collect them;
run them by path (see the README)."""

import pytest
import torch


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def pytest_benchmark_update_machine_info(config, machine_info):
    from harness.envinfo import capture
    from harness.telemetry import device_identity

    device = _device()
    env = capture(device)
    env.update({f"nvml_{k}": v for k, v in device_identity(device).items()})
    machine_info["llmbench"] = env


@pytest.fixture
def device() -> torch.device:
    return _device()


@pytest.fixture
def timed(benchmark, device):
    """``timed(fn, rounds, warmup, extra)``: ``fn`` timed with explicit rounds and warm-up rounds, the
    device synchronised inside the timed call so queued GPU work is counted; ``extra`` (bytes,
    flops) goes to the benchmark's extra_info."""

    def run(fn, rounds: int, warmup: int, setup=None, **extra):
        def synced():
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        benchmark.extra_info.update(extra)
        return benchmark.pedantic(synced, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)

    return run
