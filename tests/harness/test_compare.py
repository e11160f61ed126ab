"""harness.compare's rules without the command line: directions, thresholds, matching by point, and the
verdict rule (significant AND beyond the threshold) on synthetic samples."""

import numpy as np
import pytest

from harness import compare
from harness.records import make_record
from workloads.errors import UserError

POINT = {"workload": "decode", "model": "m", "dtype": "bf16", "batch_size": 1}


def noisy(median, n, noise, seed):
    """``n`` samples around ``median`` with relative Gaussian noise ``noise`` (seeded)."""
    return (median * (1 + noise * np.random.default_rng(seed).standard_normal(n))).tolist()


def record(metrics=None, samples=None, point=POINT):
    metrics = dict(metrics or {})
    if samples is not None:
        metrics["samples"] = samples
    return make_record(run_id="r", point=point, metrics=metrics)


def sampled(rate, n=12, noise=0.025, seed=0):
    """A decode record whose tokens/s and TTFT samples come from one quiet (noise 2.5%) machine."""
    tok, ttft = noisy(rate, n, noise, seed), noisy(2000.0 / rate, n, noise, seed + 1000)
    return record({"tokens_per_s": float(np.median(tok)), "ttft_ms": float(np.median(ttft))},
                  {"tokens_per_s": tok, "ttft_ms": ttft})


def test_directions():
    assert compare.direction("tokens_per_s") == "higher" and compare.direction("achieved_gbps") == "higher"
    assert compare.direction("tpot_ms_p90") == "lower" and compare.direction("median_ms") == "lower"
    assert compare.direction("joules_per_token") == "lower" and compare.direction("tokens_per_joule") == "higher"
    assert compare.parse_metrics(["foo:lower,tokens_per_s"]) == {"foo": "lower", "tokens_per_s": "higher"}


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("5", 0.05), ("0.5%", 0.005), ("0%", 0.0)])
def test_thresholds_are_percent(text, value):
    assert compare.parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["nan", "NaN%", "inf", "-inf", "-5%", "five", ""])
def test_non_finite_or_negative_thresholds_are_refused(text):
    with pytest.raises(UserError, match="--threshold"):
        compare.parse_threshold(text)


@pytest.mark.parametrize("change, way, significant, expected", [
    (-0.20, "higher", True, compare.REGRESSION), (0.20, "lower", True, compare.REGRESSION),
    (0.20, "higher", True, compare.IMPROVEMENT), (-0.20, "lower", True, compare.IMPROVEMENT),
    (-0.20, "higher", False, compare.NO_CHANGE), (0.20, "lower", False, compare.NO_CHANGE),  # not significant
    (-0.03, "higher", True, compare.NO_CHANGE), (0.03, "lower", True, compare.NO_CHANGE),  # within threshold
    (-0.05, "higher", True, compare.NO_CHANGE),  # exactly the threshold does not exceed it
])
def test_the_verdict_rule(change, way, significant, expected):
    assert compare.verdict(change, way, 0.05, significant) == expected


def test_the_sample_lists_behind_each_metric():
    r = record({"tpot_ms_p50": 10.0, "tpot_ms_p90": 12.0, "step_ms_p50": 5.0},
               {"tpot_ms": [10.0, 11.0, None, "x"], "step_ms": [5.0, 6.0], "time_ms": [1.0, 2.0, 3.0]})
    assert compare.samples(r, "tpot_ms_p50") == [10.0, 11.0]  # non-numbers (nan stored as null) dropped
    assert compare.samples(r, "step_ms_p50") == [5.0, 6.0] and compare.samples(r, "time_ms") == [1.0, 2.0, 3.0]
    assert compare.samples(r, "tpot_ms_p90") is None  # a p90 is not the median the test compares
    assert compare.samples(record({"tokens_per_s": 1.0}), "tokens_per_s") is None
    assert compare.value(r, "time_ms") == 2.0  # no plain value: the samples' median


@pytest.mark.parametrize("seed", range(10))
def test_two_runs_of_the_same_command_are_no_significant_change(seed):
    base, new = sampled(100.0, seed=seed), sampled(100.0, seed=seed + 100)
    rows, failed, _ = compare.compare_runs([base], [new], None, 0.05)
    assert failed == 0 and [row["status"] for row in rows] == [compare.NO_CHANGE] * 2
    assert all(row["p"] is not None and row["ratio"] == pytest.approx(1.0, abs=0.04) for row in rows)


@pytest.mark.parametrize("seed", range(10))
def test_a_real_20_percent_slowdown_is_a_regression(seed):
    base, new = sampled(100.0, seed=seed), sampled(100.0 / 1.2, seed=seed + 100)
    rows, failed, _ = compare.compare_runs([base], [new], None, 0.05)
    assert failed == 2 and [row["status"] for row in rows] == [compare.REGRESSION] * 2
    tok = rows[0]
    assert tok["metric"] == "tokens_per_s" and tok["p"] < 0.05 and tok["change"] == pytest.approx(-16.7, abs=3)
    assert tok["n"] == "12/12" and "no samples" not in str(tok.get("note"))
    # ...and the same speed-up the other way is an improvement, which does not fail.
    rows, failed, _ = compare.compare_runs([new], [base], None, 0.05)
    assert failed == 0 and [row["status"] for row in rows] == [compare.IMPROVEMENT] * 2


def test_a_significant_change_within_the_threshold_is_no_significant_change():
    base = record(samples={"time_ms": noisy(1.0, 15, 0.003, 1)})
    new = record(samples={"time_ms": noisy(1.02, 15, 0.003, 2)})  # 2% slower, very quiet: clearly significant
    assert compare.significance(base["metrics"]["samples"]["time_ms"], new["metrics"]["samples"]["time_ms"])[
        "significant"]
    rows, failed, _ = compare.compare_runs([base], [new], None, 0.05)
    assert failed == 0 and rows[0]["status"] == compare.NO_CHANGE
    rows, failed, _ = compare.compare_runs([base], [new], None, 0.01)  # a 1% threshold catches it
    assert failed == 1 and rows[0]["status"] == compare.REGRESSION


def test_a_change_beyond_the_threshold_that_is_not_significant_is_no_significant_change():
    base_s, new_s = noisy(1.0, 10, 0.3, 3), noisy(1.0, 10, 0.3, 4)
    new_s = [v * 1.08 * np.median(base_s) / np.median(new_s) for v in new_s]  # medians 8% apart, 30% noise
    test = compare.significance(base_s, new_s)
    assert test["ratio"] == pytest.approx(1.08) and test["p"] >= 0.05 and not test["significant"]
    rows, failed, _ = compare.compare_runs([record(samples={"time_ms": base_s})],
                                           [record(samples={"time_ms": new_s})], None, 0.05)
    assert failed == 0 and rows[0]["status"] == compare.NO_CHANGE and rows[0]["change"] == pytest.approx(8.0)


def test_significant_needs_both_the_test_and_the_interval():
    # Most of NEW sits far above BASELINE, so the ranks differ (p < 0.05), but its median is fragile: a
    # resample flips it back into BASELINE's range, and the ratio's interval holds 1.
    base = [100.0 + i for i in range(21)]
    new = [107.0 + 0.5 * i for i in range(10)] + [200.0 + i for i in range(11)]
    test = compare.significance(base, new)
    assert test["p"] < 0.02 and test["ci_low"] < 0.99 and test["ratio"] > 1.5 and not test["significant"]
    rows, failed, _ = compare.compare_runs([record(samples={"time_ms": base})],
                                           [record(samples={"time_ms": new})], None, 0.05)
    assert failed == 0 and rows[0]["status"] == compare.NO_CHANGE
    # The other way round: the middle third moved 8% (the medians' ratio is sure of it) while two thirds
    # of the calls, in wide tails, did not move, so the ranks barely differ (p well above 0.05).
    tails = [50.0 + 0.1 * i for i in range(20)], [150.0 + 0.1 * i for i in range(20)]
    base = [*tails[0], *(100.0 + 0.01 * i for i in range(20)), *tails[1]]
    new = [*tails[0], *(108.0 + 0.01 * i for i in range(20)), *tails[1]]
    test = compare.significance(base, new)
    assert test["p"] > 0.2 and 1.07 < test["ci_low"] <= test["ci_high"] < 1.09 and not test["significant"]
    rows, failed, _ = compare.compare_runs([record(samples={"time_ms": base})],
                                           [record(samples={"time_ms": new})], None, 0.05)
    assert failed == 0 and rows[0]["status"] == compare.NO_CHANGE


def test_records_without_samples_are_checked_against_the_threshold_only():
    rows, failed, notes = compare.compare_runs([record({"tokens_per_s": 100.0})], [record({"tokens_per_s": 97.0})],
                                               {"tokens_per_s": "higher"}, 0.05)
    assert failed == 0 and rows[0]["status"] == compare.NO_CHANGE and rows[0]["note"] == compare.THRESHOLD_ONLY
    assert rows[0].get("p") is None and rows[0].get("ci") is None
    assert any("without the significance test" in note for note in notes)
    rows, failed, _ = compare.compare_runs([record({"tokens_per_s": 100.0})], [record({"tokens_per_s": 90.0})],
                                           {"tokens_per_s": "higher"}, 0.05)
    assert failed == 1 and rows[0]["status"] == compare.REGRESSION and rows[0]["change"] == pytest.approx(-10.0)
    assert rows[0]["note"] == compare.THRESHOLD_ONLY
    # One side with samples and an old record on the other: still the threshold.
    rows, failed, _ = compare.compare_runs([record({"tokens_per_s": 100.0})], [sampled(80.0)],
                                           {"tokens_per_s": "higher"}, 0.05)
    assert failed == 1 and rows[0]["note"] == compare.THRESHOLD_ONLY


def test_too_few_samples_for_the_test_fall_back_to_the_threshold():
    assert not compare.can_be_significant(2, 2) and not compare.can_be_significant(3, 3)
    assert compare.can_be_significant(4, 4) and compare.can_be_significant(12, 12)
    base = record({"time_ms": 1.0}, {"time_ms": [1.0, 1.01]})
    new = record({"time_ms": 1.3}, {"time_ms": [1.3, 1.31]})  # 30% slower on 2 samples: never p < 0.05
    rows, failed, _ = compare.compare_runs([base], [new], None, 0.05)
    assert failed == 1 and rows[0]["status"] == compare.REGRESSION and "too few" in rows[0]["note"]


def test_warnings_and_quality_do_not_tell_points_apart():
    noisy_run = {**sampled(100.0, seed=5), "warnings": ["noisy: tokens_per_s varies by 12%"],
                 "quality": {"token_agreement": 0.98}}
    rows, failed, notes = compare.compare_runs([sampled(100.0)], [noisy_run], None, 0.05)
    assert len(rows) == 2 and failed == 0 and not notes


def test_metric_names_in_no_record_and_points_in_no_common_are_errors():
    base, new = sampled(100.0), sampled(100.0, seed=1)
    with pytest.raises(UserError, match="wibble"):
        compare.compare_runs([base], [new], {"wibble": "higher"}, 0.05)
    # present on one side is enough to be a metric (the other side lacks it: no row)
    only_base = record({"tokens_per_s": 100.0, "wibble": 1.0})
    rows, _, _ = compare.compare_runs([only_base], [new], {"wibble": "higher", "tokens_per_s": "higher"}, 0.05)
    assert [row["metric"] for row in rows] == ["tokens_per_s"]
    with pytest.raises(UserError, match="no point in common"):
        compare.compare_runs([base], [record({"tokens_per_s": 1.0}, point={"workload": "decode", "model": "n"})],
                             {"tokens_per_s": "higher"}, 0.05)


@pytest.mark.parametrize("expect", ["nan", "inf", "-inf", "0", "0.0", "true", '"fast"', "{ value = 1.0, lower = nan }",
                                    "{ value = 1.0, upper = inf }", "{ value = 1.0, lower = 0.1 }"])
def test_reference_values_must_be_finite_and_non_zero(tmp_path, expect):
    path = tmp_path / "ref.toml"
    path.write_text(f'[[point]]\nworkload = "decode"\n[point.expect]\ntokens_per_s = {expect}\n')
    with pytest.raises(UserError, match="tokens_per_s"):
        compare.load_reference(path)
