"""The workload contract's pieces: the two kinds of timed region and the skip signal."""

import pytest

from workloads.workload import Calls, Runs, Unsupported


def test_region_defaults():
    calls = Calls(lambda: None)
    assert calls.grads == []
    runs = Runs(run=lambda clock, index: None, summarize=lambda timelines: {})
    assert (runs.warmup, runs.repeats, runs.tokens) == (0, 1, 0)
    assert runs.peak(1234) == 1234  # one process: its own peak


def test_unsupported_is_an_exception_with_the_reason():
    with pytest.raises(Unsupported, match="needs a GPU"):
        raise Unsupported("needs a GPU")
