"""Sweep files -> points: expansion, ids, checks against the real parsers, and the old
``python -m harness.sweep`` entry that sweep folders rendered before the CLI steps still call."""

import json
import subprocess
import sys
import textwrap

import pytest

from harness import cli, sweep
from workloads.errors import UserError


@pytest.fixture()
def plan(tmp_path, parser):
    def plan(text):
        path = tmp_path / "sweep.toml"
        path.write_text(textwrap.dedent(text).replace("{out}", str(tmp_path / "out")))
        return sweep.load(path, parser)

    return plan


def test_matrix_exclude_include_and_argv(tmp_path, plan, base_sweep):
    s = plan(base_sweep + """
        [[exclude]]
        model = "tiny-gpt2"
        dtype = ["bf16", "fp32"]
        batch_size = 2
        [[include]]
        model = "tiny-opt"
        dtype = "fp16"
        batch_size = 4
        [[include]]
        model = "tiny-llama"
        dtype = "bf16"
        batch_size = 1
    """)
    combos = [(p.params["model"], p.params["dtype"], p.params["batch_size"]) for p in s.points]
    assert combos == [("tiny-llama", "bf16", 1), ("tiny-llama", "bf16", 2), ("tiny-llama", "fp32", 1),
                      ("tiny-llama", "fp32", 2), ("tiny-gpt2", "bf16", 1), ("tiny-gpt2", "fp32", 1),
                      ("tiny-opt", "fp16", 4)]  # the second include repeats point 0 and is dropped
    assert [p.index for p in s.points] == list(range(7))
    assert s.points[0].argv == ["decode", "--prompt-len", "8", "--new-tokens", "3", "--model", "tiny-llama",
                                "--dtype", "bf16", "--batch-size", "1"]
    assert s.out == tmp_path / "out" and all(p.nproc == 1 for p in s.points)


def test_point_ids_are_stable_and_distinct(plan, base_sweep):
    assert sweep.point_id("decode", {"a": 1, "b": "x"}) == sweep.point_id("decode", {"b": "x", "a": 1})
    assert sweep.point_id("decode", {"a": 1}) != sweep.point_id("decode", {"a": 2})
    assert sweep.point_id("decode", {"a": 1}) != sweep.point_id("peak", {"a": 1})
    first, again = plan(base_sweep), plan(base_sweep.replace('"t"', '"other"'))
    assert [p.id for p in first.points] == [p.id for p in again.points]
    assert len({p.id for p in first.points}) == 8


def test_flags_and_workload_axis(plan):
    s = plan("""
        name = "flags"
        [matrix]
        workload = ["decode", "peak"]
        dtype = ["fp32"]
        [[include]]
        workload = "decode"
        no_ceilings = true
        do_sample = false
    """)
    assert [p.argv for p in s.points] == [["decode", "--dtype", "fp32"], ["peak", "--dtype", "fp32"],
                                          ["decode", "--no-ceilings"]]


def test_nested_subcommand_workload(plan):
    s = plan('name = "k"\nworkload = "kernel attention"\n[matrix]\nseq_len = [128, 256]\n')
    assert [p.argv for p in s.points] == [["kernel", "attention", "--seq-len", "128"],
                                          ["kernel", "attention", "--seq-len", "256"]]


def test_ten_thousand_points(plan):
    axes = {"batch_size": range(1, 11), "prompt_len": range(16, 26), "new_tokens": range(2, 12),
            "seed": range(10)}
    body = "\n".join(f"{k} = {list(v)}" for k, v in axes.items())
    s = plan(f'name = "big"\nworkload = "decode"\n[params]\nmodel = "tiny-llama"\n[matrix]\n{body}\n')
    assert len(s.points) == 10_000 and len({p.id for p in s.points}) == 10_000


def test_distributed_workload_launches_under_torchrun():
    root = cli.build_parser()
    sub = next(a for a in root._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    train = sub.add_parser("train")
    train.add_argument("--nproc", type=int, default=1)
    train.add_argument("--steps", type=int, default=1)
    train.add_argument("--out")
    data = {"name": "t", "workload": "train", "matrix": {"steps": [1]}, "include": [{"nproc": 2}],
            "slurm": {"gpus_per_task": 4}}
    s = sweep.from_dict(data, root)
    assert [(p.argv, p.nproc) for p in s.points] == [(["train", "--steps", "1", "--nproc", "4"], 4),
                                                    (["train", "--nproc", "2"], 2)]
    with pytest.raises(UserError, match="nproc = 8 but"):
        sweep.from_dict({"name": "t", "workload": "train", "matrix": {"nproc": [8]},
                         "slurm": {"gpus_per_task": 4}}, root)


def test_parser_parts_reads_subcommands_and_long_options(parser):
    subcommands, options = sweep.parser_parts(parser)
    assert {"decode", "peak", "kernel", "sweep"} <= set(subcommands) and "help" in options
    _, decode = sweep.parser_parts(subcommands["decode"])
    assert decode["batch_size"][0] == "--batch-size" and decode["no_ceilings"][1].nargs == 0


def test_points_module_builds_no_parser_and_imports_no_command():
    code = ("import sys; import harness.sweep; "
            "bad = [m for m in ('harness.cli', 'harness.commands', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


OLD_MANIFEST = {
    "manifest_version": 1, "name": "old", "created": "2025-01-01T00:00:00+00:00", "dir": "{dir}", "cwd": "{dir}",
    "python": sys.executable, "env": {}, "slurm": {}, "jobs": [],
    "points": [{"index": 0, "id": "0123456789ab", "workload": "models", "params": {}, "argv": ["models"],
                "nproc": 1}],
}


def test_old_python_m_harness_sweep_entry_runs_the_cli_step(tmp_path):
    """sweep.sbatch files rendered before the steps moved into the CLI call `python -m harness.sweep`."""
    (tmp_path / "manifest.json").write_text(json.dumps(OLD_MANIFEST).replace("{dir}", str(tmp_path)))
    (tmp_path / "tasks").mkdir()

    def old_entry(*words):
        return subprocess.run([sys.executable, "-m", "harness.sweep", *words], capture_output=True, text=True)

    status = old_entry("status", str(tmp_path))
    assert status.returncode == 0, status.stderr
    assert "sweep old: 1 points" in status.stdout and "pending 1" in status.stdout
    task = old_entry("task", str(tmp_path), "--index", "0")  # `models` has no --out: the point fails, recorded
    assert task.returncode == 1 and "point 0: failed" in task.stderr
    state = json.loads((tmp_path / "tasks" / "0.json").read_text())
    assert state["state"] == "failed" and "--out" in state["error"]
    missing = old_entry("status", str(tmp_path / "none"))
    assert missing.returncode == 2 and missing.stderr.startswith("llmbench sweep: error:")
