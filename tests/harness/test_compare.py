"""harness.compare's rules without the command line: directions, thresholds, matching by point."""

import pytest

from harness import compare
from harness.records import make_record
from workloads.errors import UserError


def test_directions():
    assert compare.direction("tokens_per_s") == "higher" and compare.direction("achieved_gbps") == "higher"
    assert compare.direction("tpot_ms_p90") == "lower" and compare.direction("median_ms") == "lower"
    assert compare.direction("joules_per_token") == "lower" and compare.direction("tokens_per_joule") == "higher"
    assert compare.parse_metrics(["foo:lower,tokens_per_s"]) == {"foo": "lower", "tokens_per_s": "higher"}


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("5", 0.05), ("0.5%", 0.005), ("0%", 0.0)])
def test_thresholds_are_percent(text, value):
    assert compare.parse_threshold(text) == pytest.approx(value)


def test_a_regression_beyond_the_threshold_fails_and_noise_passes():
    def record(rate):
        return make_record(run_id="r", point={"workload": "decode", "model": "m", "dtype": "bf16", "batch_size": 1},
                           metrics={"tokens_per_s": rate})

    rows, failed, _ = compare.compare_runs([record(100.0)], [record(97.0)], {"tokens_per_s": "higher"}, 0.05)
    assert failed == 0 and rows[0]["status"] == "ok"
    rows, failed, _ = compare.compare_runs([record(100.0)], [record(90.0)], {"tokens_per_s": "higher"}, 0.05)
    assert failed == 1 and rows[0]["change"] == pytest.approx(-10.0)
    with pytest.raises(UserError):
        compare.compare_runs([record(100.0)], [make_record(run_id="x", point={"workload": "decode", "model": "n"},
                                                           metrics={"tokens_per_s": 1.0})],
                             {"tokens_per_s": "higher"}, 0.05)
