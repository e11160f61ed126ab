"""The workload contract's pieces: the two kinds of timed region and the spread statistics."""

import pytest

from workloads.workload import Calls, Runs, Unsupported, spread


def test_spread_percentiles():
    s = spread(range(1, 12), "x")
    assert s == {"x_p10": 2.0, "x_p50": 6.0, "x_p90": 10.0}
    assert spread([5.0], "y") == {"y_p10": 5.0, "y_p50": 5.0, "y_p90": 5.0}


def test_region_defaults():
    calls = Calls(lambda: None)
    assert calls.grads == []
    runs = Runs(run=lambda clock, index: None, summarize=lambda timelines: {})
    assert (runs.warmup, runs.repeats, runs.tokens) == (0, 1, 0)
    assert runs.peak(1234) == 1234  # one process: its own peak


def test_unsupported_is_an_exception_with_the_reason():
    with pytest.raises(Unsupported, match="needs a GPU"):
        raise Unsupported("needs a GPU")
