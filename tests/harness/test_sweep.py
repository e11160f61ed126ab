"""Sweep files -> points: expansion, ids, checks against the real parsers (every point's whole command
line and its command's ``validate``), and the old ``python -m harness.sweep`` entry that sweep folders
rendered before the CLI steps still call."""

import json
import re
import subprocess
import sys
import textwrap

import pytest

from harness import cli, sweep
from workloads.errors import UserError

from .conftest import add_work, work_validate


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


def test_ten_thousand_points_parse_once_per_shape_and_validate_each(monkeypatch, work_parser):
    """10,000 points: each is checked, but the parser runs once per shape (the options a point sets) and
    validate once per distinct set of the values it reads (not sizes, not name here)."""
    parses, validated = [], []
    real_parse = sweep.PointCheck.parse
    monkeypatch.setattr(sweep.PointCheck, "parse", lambda self, argv: parses.append(argv) or real_parse(self, argv))
    sub = sweep.parser_parts(work_parser)[0]["work"]
    sub.set_defaults(validate=lambda args: validated.append((args.size, args.offset, args.mode, args.fast)))
    data = {"name": "big", "workload": "work", "params": {"name": "beta"},
            "matrix": {"size": list(range(1, 26)), "offset": list(range(-10, 10)), "mode": ["a", "b"],
                       "fast": [True, False], "sizes": ["1", "2,4", "8", "16", "32"]},
            "include": [{"size": 7, "name": "alpha"}]}
    s = sweep.from_dict(data, work_parser)
    assert len(s.points) == 10_001 and len({p.id for p in s.points}) == 10_001
    assert sorted(validated) == sorted(set(validated)) and len(validated) == 25 * 20 * 2 * 2  # once per values read
    # shapes: with and without --fast, include's; negative offsets (-1..-10) parse in full (they start with '-')
    assert len(parses) == 3 + 25 * 10 * 2 * 2 * 5
    assert s.points[0].argv == ["work", "--name", "beta", "--size", "1", "--offset", "-10", "--mode", "a",
                                "--fast", "--sizes", "1"]


def test_template_namespaces_equal_a_full_parse(work_parser, parser):
    """The namespace a point gets from its shape's template is exactly what parse_args gives it."""
    cases = [
        ("work", {"size": 3, "name": "beta", "mode": "b", "fast": True, "no_slow": True, "sizes": "2,4"}),
        ("work", {"size": 9, "name": "alpha", "mode": "a", "fast": True, "no_slow": True, "sizes": "8"}),
        ("work", {"size": 9, "name": "alpha", "fast": False, "offset": -4}),
        ("work", {"sizes": "1,2", "size": 5}),
        ("work", {"sizes": "3", "size": 6}),
    ]
    real = [
        ("decode", {"model": "tiny-llama", "dtype": "bf16,fp32", "batch_size": "1,2", "no_compile": True}),
        ("decode", {"model": "tiny-gpt2", "dtype": "fp32", "batch_size": 4, "no_compile": True}),
        ("kernel attention", {"seq_len": 128, "head_dim": 64, "causal": "yes"}),
        ("kernel attention", {"seq_len": 256, "head_dim": 128, "causal": "no"}),
    ]
    for root, group in ((work_parser, cases), (parser, real)):
        check = sweep.PointCheck(root, "/tmp/out")
        seen = set()
        for workload, params in group:
            opts = sweep.Options(workload, root)
            argv, sets = workload.split(), []
            for key, value in params.items():
                words, assignment = opts.convert(key, value)
                if words:
                    argv += words
                    sets.append(assignment)
            shape = (workload, *(w for w in argv if w.startswith("--")))
            fast = check.namespace(workload, argv, sets)
            assert shape not in seen or fast is not check._templates[shape]  # the second of a shape is a copy
            seen.add(shape)
            assert vars(fast) == vars(check.parse(argv)), (workload, params)


def plan_error(data, root) -> str:
    with pytest.raises(UserError) as info:
        sweep.from_dict(data, root)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_every_point_is_validated_and_a_bad_one_is_named(work_parser, capsys):
    ok = {"name": "w", "workload": "work", "matrix": {"size": [1, 2, 3], "name": ["alpha", "beta"]}}
    assert len(sweep.from_dict(ok, work_parser).points) == 6
    bad = {**ok, "matrix": {"size": [1, 2], "name": ["alpha", "gamma", "beta"]}}
    assert plan_error(bad, work_parser) == ('point 1 (work: size = 1, name = "gamma"): unknown name \'gamma\'; '
                                            "choose alpha or beta (1 more of the 6 points are refused too)")
    over = {"name": "w", "workload": "work", "matrix": {"size": [5]}, "include": [{"size": 101, "mode": "b"}]}
    assert plan_error(over, work_parser) == "point 1 (work: size = 101, mode = \"b\"): --size 101 is over 100"
    cross = {"name": "w", "workload": "work", "params": {"fast": True}, "matrix": {"size": [2, 3, 4]}}
    assert plan_error(cross, work_parser).startswith("point 1 (work: fast = true, size = 3): --fast needs a size")
    assert capsys.readouterr() == ("", "")  # no usage text, no help


def test_the_whole_command_line_is_parsed(work_parser, capsys):
    """What per-value checks cannot see: a required option, options that exclude each other."""
    root = add_work(cli.build_parser(), level={"required": True, "type": int})
    message = plan_error({"name": "w", "workload": "work", "matrix": {"size": [1, 2]}}, root)
    assert message.startswith("point 0 (work: size = 1): the following arguments are required: --level")
    assert message.endswith("(1 more of the 2 points are refused too)")
    assert len(sweep.from_dict({"name": "w", "workload": "work", "matrix": {"level": [1, 2]}}, root).points) == 2
    root = add_work(cli.build_parser())
    work = sweep.parser_parts(root)[0]["work"]
    group = work.add_mutually_exclusive_group()
    group.add_argument("--red", action="store_true")
    group.add_argument("--blue", action="store_true")
    message = plan_error({"name": "w", "workload": "work", "matrix": {"red": [True, False]}, "params": {"blue": True}},
                         root)
    assert message.startswith("point 0 (work: blue = true, red = true): argument --red: not allowed with argument")
    assert capsys.readouterr() == ("", "")


def test_a_slow_validate_runs_once_per_distinct_command_line(work_parser):
    calls = []
    sweep.parser_parts(work_parser)[0]["work"].set_defaults(validate=lambda a: calls.append(vars(a)["size"]))
    data = {"name": "w", "workload": "work", "matrix": {"size": [1, 2]},
            "include": [{"size": 1}, {"size": "1"}, {"size": 2}]}  # ids differ (1 vs "1"), command lines do not
    points = sweep.from_dict(data, work_parser).points
    assert len(points) == 3 and points[0].argv == points[2].argv and calls == [1, 2]


def test_validate_outcomes_are_reused_by_the_values_it_read(work_parser):
    """A later point whose values of what validate read are the same gets the same outcome without a call;
    a different value of any of them (or of what a different branch reads) calls it again."""
    calls = []

    def validate(args):
        calls.append((args.size, args.mode))
        if args.mode == "b" and getattr(args, "fast", None):  # reads fast only on this branch
            raise UserError("mode b cannot be fast")
        work_validate(args)

    sweep.parser_parts(work_parser)[0]["work"].set_defaults(validate=validate)
    data = {"name": "w", "workload": "work", "matrix": {"size": [1, 3, 1], "mode": ["a", "b"],
                                                        "offset": [1, 2, 3]}}
    assert len(sweep.from_dict(data, work_parser).points) == 12  # size 1 twice: the same ids, dropped
    assert calls == [(1, "a"), (1, "b"), (3, "a"), (3, "b")]  # not per offset: validate never read it
    calls.clear()
    data = {"name": "w", "workload": "work", "matrix": {"mode": ["a", "b"], "fast": [False, True], "size": [2, 3]}}
    message = plan_error(data, work_parser)  # points 3 (a, fast, 3), 6 and 7 (b, fast): every reading differs
    assert message.startswith("point 3 (work: mode = \"a\", fast = true, size = 3): --fast needs a size other than 3")
    assert message.endswith("(2 more of the 8 points are refused too)") and len(calls) == 8


def test_a_validate_that_reads_everything_is_called_every_time(work_parser):
    calls = []
    sweep.parser_parts(work_parser)[0]["work"].set_defaults(validate=lambda a: calls.append(dict(vars(a))))
    sweep.from_dict({"name": "w", "workload": "work", "matrix": {"offset": [1, 2, 3]}}, work_parser)
    assert [c["offset"] for c in calls] == [1, 2, 3]


@pytest.mark.parametrize("params, message", [
    ({"name": "--help"}, "name = '--help' starts with '-', so --name would read it as an option"),
    ({"name": "-h"}, "starts with '-'"),
    ({"name": "--size=3"}, "starts with '-'"),
    ({"size": "-1"}, "size = '-1': must be at least 1"),  # a negative number is a value: its type refuses it
    ({"name": "-"}, "starts with '-'"),
])
def test_values_read_as_options_are_refused(work_parser, params, message):
    data = {"name": "w", "workload": "work", "matrix": {"mode": ["a"]}, "params": params}
    assert message in plan_error(data, work_parser)


def test_negative_numbers_are_values(work_parser):
    s = sweep.from_dict({"name": "w", "workload": "work", "matrix": {"offset": [-3, 2, "-7"]}}, add_work(
        cli.build_parser(), validate=None))
    assert [p.argv[-1] for p in s.points] == ["-3", "2", "-7"]
    assert "offset = '-1.5e0' starts with '-'" in plan_error(  # argparse would take it for an option
        {"name": "w", "workload": "work", "matrix": {"offset": ["-1.5e0"]}}, work_parser)


@pytest.mark.parametrize("workload, message", [
    ("report", "`llmbench report` needs the argument(s) RESULTS_DIR on its command line"),
    ("import-pytest-benchmark", "`llmbench import-pytest-benchmark` needs the argument(s) FILE.json"),
    ("sweep plan", "`llmbench sweep plan` cannot be a sweep point"),
    ("sweep", "`llmbench sweep` cannot be a sweep point"),
])
def test_workloads_that_need_a_positional_argument_are_refused(parser, workload, message):
    assert message in plan_error({"name": "w", "workload": workload, "matrix": {"out_format": ["x"]}}, parser)


def real_validate(parser, command: str) -> bool:
    return callable(sweep.parser_parts(parser)[0][command].get_default("validate"))


@pytest.mark.parametrize("params, message", [
    ({"model": "no-such-preset"}, "unknown model preset 'no-such-preset'"),
    ({"dtype": ","}, "dtype"),
    ({"dtype": "fp64"}, "fp64"),
    ({"model": "/no/such/folder"}, "/no/such/folder"),
])
def test_real_decode_points_are_validated(parser, params, message):
    if not real_validate(parser, "decode"):
        pytest.skip("`llmbench decode` has no validate yet")
    data = {"name": "d", "workload": "decode", "params": {"model": "tiny-gpt2", **params},
            "matrix": {"batch_size": [1, 2]}}
    error = plan_error(data, parser)
    assert error.startswith("point 0 (decode: model = ") and message in error, error


def test_toml_dates_and_bad_files_are_one_line_errors(tmp_path, parser):
    date = tmp_path / "date.toml"
    date.write_text('name = "d"\nworkload = "decode"\n[matrix]\nseed = [1979-05-27]\n')
    with pytest.raises(UserError, match="matrix.seed = 1979-05-27: expected a string, a number or true/false"):
        sweep.load(date, parser)
    date.write_text('name = "d"\nworkload = "decode"\n[params]\nmodel = 07:32:00\n[matrix]\nseed = [1]\n')
    with pytest.raises(UserError, match="params.model = 07:32:00"):
        sweep.load(date, parser)
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "d"\n# caf\xe9\n'.encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text"):
        sweep.load(latin, parser)
    with pytest.raises(UserError, match="cannot read the sweep file"):
        sweep.load(tmp_path / ("x" * 300 + ".toml"), parser)
    with pytest.raises(UserError, match="workload must be a subcommand name"):
        sweep.from_dict({"name": "d", "matrix": {"workload": [1]}}, parser)


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
    with pytest.raises(UserError, match=r"point 0 \(train: nproc = 8\) asks for nproc = 8 but \[slurm\] gives each "
                                        r"node 4 GPU\(s\)"):
        sweep.from_dict({"name": "t", "workload": "train", "matrix": {"nproc": [8]},
                         "slurm": {"gpus_per_task": 4}}, root)
    two = sweep.from_dict({**data, "slurm": {"nodes": 2, "gpus_per_node": 4}}, root)
    assert [p.nproc for p in two.points] == [4, 2] and two.slurm.nodes == 2


@pytest.mark.parametrize("slurm, message", [
    ({"gpus_per_task": 4}, "gpus_per_task = 4, but `llmbench kernel attention` runs one process on one GPU: the "
                           "other 3 would sit idle"),
    ({"gpus_per_node": 2}, "gpus_per_task = 2, but `llmbench kernel attention` runs one process"),
    ({"nodes": 2}, "nodes = 2, but `llmbench kernel attention` runs as one process on one node"),
])
def test_single_process_workloads_get_no_idle_gpus_or_nodes(parser, slurm, message):
    sweep_file = {"name": "t", "workload": "kernel attention", "matrix": {"seq_len": ["64"]}}
    with pytest.raises(UserError, match=re.escape(message)):
        sweep.from_dict({**sweep_file, "slurm": slurm}, parser)
    one = sweep.from_dict({**sweep_file, "slurm": {"gpus_per_task": 1}}, parser)
    assert [p.nproc for p in one.points] == [1]


def test_decode_points_split_the_model_over_the_gpus_per_task(parser):
    data = {"name": "t", "workload": "decode", "params": {"model": "tiny-llama"}, "matrix": {"seed": [1]},
            "include": [{"tp": 1}], "slurm": {"gpus_per_task": 2}}
    s = sweep.from_dict(data, parser)
    assert [(p.nproc, p.argv[-2:]) for p in s.points] == [(2, ["--tp", "2"]), (1, ["--tp", "1"])]
    with pytest.raises(UserError, match="tiny-llama's 2 KV heads do not divide into 4"):
        sweep.from_dict({**data, "slurm": {"gpus_per_task": 4}}, parser)
    with pytest.raises(UserError, match=re.escape("splits a model over the GPUs of one node (--tp)")):
        sweep.from_dict({**data, "slurm": {"nodes": 2, "gpus_per_node": 2}}, parser)


def test_finetune_points_get_nproc_from_the_gpus_per_task(parser):
    data = {"name": "t", "workload": "finetune", "params": {"model": "tiny-llama"}, "matrix": {"nproc": [1, 2]},
            "include": [{"fsdp": True}], "slurm": {"gpus_per_task": 2}}
    s = sweep.from_dict(data, parser)
    assert [(p.nproc, p.argv[-2:]) for p in s.points] == [(1, ["--nproc", "1"]), (2, ["--nproc", "2"]),
                                                          (2, ["--nproc", "2"])]
    assert "--fsdp" in s.points[2].argv


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
        return subprocess.run([sys.executable, "-m", "harness.sweep", *words], capture_output=True, text=True, check=False)

    status = old_entry("status", str(tmp_path))
    assert status.returncode == 0, status.stderr
    assert "sweep old: 1 points" in status.stdout and "pending 1" in status.stdout
    task = old_entry("task", str(tmp_path), "--index", "0")  # `models` has no --out: the point fails, recorded
    assert task.returncode == 1 and "point 0: failed" in task.stderr
    state = json.loads((tmp_path / "tasks" / "0.json").read_text())
    assert state["state"] == "failed" and "--out" in state["error"]
    missing = old_entry("status", str(tmp_path / "none"))
    assert missing.returncode == 2 and missing.stderr.startswith("llmbench sweep: error:")
