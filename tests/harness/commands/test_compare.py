"""llmbench compare: matching by point, verdicts by statistics on the records' samples (and by the
threshold alone for records without them), exit codes, TOML references, side-by-side environments,
and one-line errors for bad input."""

import numpy as np
import pytest

from harness import cli
from harness.records import append_record, make_record


def decode_record(run_id, tok_s, ttft=20.0, dtype="bf16", batch=1, host="node1", device_name="NVIDIA H100 80GB HBM3",
                  status="ok", seed=None, noise=0.025):
    """A decode record; with ``seed``, it keeps samples as a real run does (12 generations, 64 decode steps,
    relative noise ``noise``) and its metrics are their medians."""
    metrics = {"tokens_per_s": tok_s, "ttft_ms": ttft, "tpot_ms_p50": 1e3 / tok_s} if status == "ok" else {}
    if seed is not None and status == "ok":
        rng = np.random.default_rng(seed)
        kept = {"tokens_per_s": tok_s * (1 + noise * rng.standard_normal(12)),
                "ttft_ms": ttft * (1 + noise * rng.standard_normal(12)),
                "tpot_ms": 1e3 / tok_s * (1 + noise * rng.standard_normal(64))}
        metrics = {"tokens_per_s": float(np.median(kept["tokens_per_s"])), "ttft_ms": float(np.median(kept["ttft_ms"])),
                   "tpot_ms_p50": float(np.median(kept["tpot_ms"])),
                   "samples": {k: v.tolist() for k, v in kept.items()}}
    return make_record(
        run_id=run_id, status=status,
        point={"workload": "decode", "model": "llama-3.2-1b", "engine": "hf", "attn": "sdpa", "dtype": dtype,
               "device": "cuda:0", "batch_size": batch, "prompt_len": 128, "new_tokens": 64, "seed": 0},
        metrics=metrics, env={"device_name": device_name, "device_type": "cuda", "host": host})


def write(folder, records):
    for r in records:
        append_record(folder / "records.jsonl", r)
    return folder


@pytest.fixture
def baseline(tmp_path):
    return write(tmp_path / "base", [decode_record("a", 100.0), decode_record("a", 400.0, batch=8),
                                     decode_record("a", 50.0, dtype="fp32")])


def run(capsys, *argv):
    code = cli.main(["compare", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def rows_of(out):
    """The table's data rows (those naming a point)."""
    return [line for line in out.splitlines() if line.startswith(("batch_size=", "dtype=", "(all)"))]


@pytest.fixture
def sampled_baseline(tmp_path):
    return write(tmp_path / "sbase", [decode_record("a", 100.0, seed=1), decode_record("a", 400.0, batch=8, seed=2)])


def test_two_runs_of_the_same_command_are_no_significant_change(tmp_path, sampled_baseline, capsys):
    new = write(tmp_path / "snew", [decode_record("b", 100.0, seed=11), decode_record("b", 400.0, batch=8, seed=12)])
    code, out, err = run(capsys, sampled_baseline, new)
    assert code == 0 and err == ""
    rows = rows_of(out)
    assert len(rows) == 6 and all("no significant change" in line for line in rows)
    assert "threshold only" not in out
    header = out.splitlines()[0].split()
    assert {"new/base", "95%", "CI", "p", "verdict"} <= set(header)  # the ratio, its interval and the p-value
    assert "Mann-Whitney p < 0.05" in out and "5% threshold" in out  # the rule, under the table


def test_a_real_20_percent_slowdown_is_a_regression(tmp_path, sampled_baseline, capsys):
    new = write(tmp_path / "snew", [decode_record("b", 100.0 / 1.2, ttft=24.0, seed=11),
                                    decode_record("b", 400.0, batch=8, seed=12)])
    code, out, err = run(capsys, sampled_baseline, new)
    assert code == 1 and "3 regression(s)" in err
    rows = rows_of(out)
    regressed = [line for line in rows if line.endswith("regression")]
    assert len(regressed) == 3 and all(line.startswith("batch_size=1") for line in regressed)
    tok = next(line.split() for line in regressed if "tokens_per_s" in line)
    ratio, low, high = float(tok[5]), float(tok[6].strip("[,")), float(tok[7].strip("]"))
    assert 0.78 < low <= ratio <= high < 0.88 and float(tok[8]) < 0.05
    assert all("no significant change" in line for line in rows if line.startswith("batch_size=8"))
    # A threshold above the slowdown lets it through, significant or not.
    assert run(capsys, sampled_baseline, new, "--threshold", "25%")[0] == 0


def test_a_change_the_noise_explains_is_not_a_regression(tmp_path, capsys):
    # The same noisy (30%) samples, 8% slower: beyond the threshold, not significant.
    base = write(tmp_path / "b", [decode_record("a", 100.0, seed=21, noise=0.3)])
    new = write(tmp_path / "n", [decode_record("b", 100.0 / 1.08, seed=21, noise=0.3)])
    code, out, _ = run(capsys, base, new, "--metric", "tokens_per_s")
    assert code == 0, out
    (row,) = rows_of(out)
    assert "-7.4" in row and row.endswith("no significant change")


def test_noise_within_threshold_passes_without_samples(tmp_path, baseline, capsys):
    new = write(tmp_path / "new", [decode_record("b", 97.0, ttft=20.5), decode_record("b", 410.0, batch=8),
                                   decode_record("b", 51.0, dtype="fp32")])
    code, out, _ = run(capsys, baseline, new)
    assert code == 0
    rows = rows_of(out)
    assert len(rows) == 9 and all("no significant change" in line and "no samples: threshold only" in line
                                  for line in rows)


def test_old_records_against_sampled_ones_use_the_threshold(tmp_path, baseline, capsys):
    new = write(tmp_path / "new", [decode_record("b", 80.0, seed=3)])
    code, out, _ = run(capsys, baseline, new, "--metric", "tokens_per_s")
    assert code == 1
    (row,) = rows_of(out)
    assert "regression" in row and row.endswith("no samples: threshold only") and "-20.6" in row


def test_injected_regression_fails(tmp_path, baseline, capsys):
    new = write(tmp_path / "new", [decode_record("b", 100.0), decode_record("b", 300.0, batch=8),
                                   decode_record("b", 50.0, dtype="fp32", ttft=30.0)])
    code, out, err = run(capsys, baseline, new, "--threshold", "5%")
    assert code == 1 and "regression" in err
    regressed = [line for line in rows_of(out) if "  regression" in line]
    # batch 8 lost tokens/s (and so gained TPOT); fp32 gained TTFT (lower is better).
    assert len(regressed) == 3
    assert any("batch_size=8" in line and "tokens_per_s" in line and "-25.0" in line for line in regressed)
    assert any("dtype=fp32" in line and "ttft_ms" in line and "+50.0" in line for line in regressed)
    # A looser threshold lets the same change through; a chosen metric limits the check.
    assert run(capsys, baseline, new, "--threshold", "60")[0] == 0
    assert run(capsys, baseline, new, "--metric", "ttft_ms", "--threshold", "60%")[0] == 0
    assert run(capsys, baseline, new, "--metric", "ttft_ms")[0] == 1


def test_latest_record_of_a_point_counts_and_failures_regress(tmp_path, baseline, capsys):
    new = write(tmp_path / "new", [decode_record("b", 10.0), decode_record("c", 100.0),
                                   decode_record("c", 400.0, batch=8, status="oom")])
    code, out, _ = run(capsys, baseline, new)
    assert code == 1
    assert "NEW oom" in out and "only in BASELINE" in out
    assert not [line for line in rows_of(out) if "  regression" in line]  # the slow batch-1 run was superseded


def test_reference_toml(tmp_path, capsys):
    new = write(tmp_path / "new", [decode_record("b", 100.0), decode_record("b", 400.0, batch=8)])
    ref = tmp_path / "ref.toml"
    ref.write_text("""
[[point]]
workload = "decode"
model = "llama-3.2-1b"
dtype = "bf16"
batch_size = 1
[point.expect]
tokens_per_s = { value = 98.0, lower = -0.05, upper = 0.05 }
ttft_ms = { value = 20.0, upper = 0.1 }

[[point]]
dtype = "bf16"
batch_size = 8
[point.expect]
tokens_per_s = 390.0
""")
    code, out, _ = run(capsys, ref, new)
    assert code == 0, out
    ref.write_text(ref.read_text().replace("value = 98.0", "value = 120.0"))
    code, out, _ = run(capsys, ref, new)
    assert code == 1 and "BELOW RANGE" in out
    ref.write_text(ref.read_text().replace("value = 120.0", "value = 80.0"))
    code, out, _ = run(capsys, ref, new)
    assert code == 1 and "ABOVE RANGE" in out  # too fast is suspicious too, as in ReFrame
    ref.write_text(ref.read_text().replace("value = 80.0", "value = 100.0").replace("batch_size = 8", "batch_size = 4"))
    code, out, _ = run(capsys, ref, new)
    assert code == 1 and "MISSING" in out


def test_side_by_side(tmp_path, capsys):
    laptop = write(tmp_path / "laptop", [decode_record("a", 20.0, host="laptop", device_name="NVIDIA RTX 4060"),
                                         decode_record("a", 60.0, batch=8, host="laptop",
                                                       device_name="NVIDIA RTX 4060")])
    node = write(tmp_path / "node", [decode_record("b", 100.0, host="mn5"), decode_record("b", 480.0, batch=8,
                                                                                          host="mn5")])
    code, out, _ = run(capsys, "--side-by-side", laptop, node, "--metric", "tokens_per_s")
    assert code == 0
    assert "[0] NVIDIA RTX 4060" in out and "[1] NVIDIA H100 80GB HBM3" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("batch_size=")}
    assert rows["batch_size=1"][1:] == ["20", "100", "5.00"]
    assert rows["batch_size=8"][1:] == ["60", "480", "8.00"]


@pytest.mark.parametrize("argv, message", [
    (["{missing}", "{base}"], "no results at"),
    (["{base}"], "takes BASELINE and NEW"),
    (["{base}", "{base}", "--threshold", "five"], "--threshold"),
    (["{base}", "{base}", "--threshold", "nan"], "--threshold"),
    (["{base}", "{base}", "--threshold", "inf%"], "--threshold"),
    (["{base}", "{base}", "--threshold=-5%"], "--threshold"),
    (["{base}", "{base}", "--metric", "wibble"], "wibble:higher"),
    (["{base}", "{base}", "--metric", "wibble:higher"], "no record"),
    (["{base}", "{base}", "--metric", "tokens_per_s,wibble:lower"], "wibble"),
    (["--side-by-side", "{base}", "{base}", "--metric", "wibble:higher"], "no record"),
    (["{bad_toml}", "{base}"], "not valid TOML"),
    (["{nan_toml}", "{base}"], "finite non-zero"),
    (["{inf_toml}", "{base}"], "finite non-zero"),
    (["{zero_toml}", "{base}"], "finite non-zero"),
    (["{other}", "{base}"], "no point in common"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, baseline, capsys, argv, message):
    (tmp_path / "bad.toml").write_text("[[point]\n")
    for name, ref in (("nan", "nan"), ("inf", "{ value = inf, lower = -0.1 }"), ("zero", "0.0")):
        (tmp_path / f"{name}.toml").write_text(f'[[point]]\nbatch_size = 1\n[point.expect]\ntokens_per_s = {ref}\n')
    other = write(tmp_path / "other", [decode_record("x", 1.0, batch=3)])
    paths = {"missing": tmp_path / "nope", "base": baseline, "bad_toml": tmp_path / "bad.toml", "other": other,
             **{f"{name}_toml": tmp_path / f"{name}.toml" for name in ("nan", "inf", "zero")}}
    code, out, err = run(capsys, *[a.format(**paths) for a in argv])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


