"""Sweep files: expansion, ids, checks against the real parsers, safe scripts, dry runs, submission
against stand-in SLURM commands, task outcomes, and a local run of tiny points."""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from harness import ceilings, cli, sweep
from harness.records import RECORDS_FILE, read_records
from slurm import backend
from workloads.errors import UserError

BASE = """
name = "t"
workload = "decode"
out = "{out}"
[params]
prompt_len = 8
new_tokens = 3
[matrix]
model = ["tiny-llama", "tiny-gpt2"]
dtype = ["bf16", "fp32"]
batch_size = [1, 2]
"""


def write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("{out}", str(tmp_path / "out")))
    return path


def plan(tmp_path, text):
    return sweep.load(write(tmp_path, text))


def test_matrix_exclude_include_and_argv(tmp_path):
    s = plan(tmp_path, BASE + """
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


def test_point_ids_are_stable_and_distinct(tmp_path):
    assert sweep.point_id("decode", {"a": 1, "b": "x"}) == sweep.point_id("decode", {"b": "x", "a": 1})
    assert sweep.point_id("decode", {"a": 1}) != sweep.point_id("decode", {"a": 2})
    assert sweep.point_id("decode", {"a": 1}) != sweep.point_id("peak", {"a": 1})
    first, again = plan(tmp_path, BASE), plan(tmp_path, BASE.replace('"t"', '"other"'))
    assert [p.id for p in first.points] == [p.id for p in again.points]
    assert len({p.id for p in first.points}) == 8


def test_flags_and_workload_axis(tmp_path):
    s = plan(tmp_path, """
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


def test_nested_subcommand_workload(tmp_path):
    s = plan(tmp_path, 'name = "k"\nworkload = "kernel attention"\n[matrix]\nseq_len = [128, 256]\n')
    assert [p.argv for p in s.points] == [["kernel", "attention", "--seq-len", "128"],
                                          ["kernel", "attention", "--seq-len", "256"]]


def test_ten_thousand_points(tmp_path):
    axes = {"batch_size": range(1, 11), "prompt_len": range(16, 26), "new_tokens": range(2, 12),
            "seed": range(10)}
    body = "\n".join(f"{k} = {list(v)}" for k, v in axes.items())
    s = plan(tmp_path, f'name = "big"\nworkload = "decode"\n[params]\nmodel = "tiny-llama"\n[matrix]\n{body}\n')
    assert len(s.points) == 10_000 and len({p.id for p in s.points}) == 10_000


@pytest.mark.parametrize("text, message", [
    ('name = "t"\nworkload = "decode"\nmatrx = {}\n', "unknown key 'matrx'"),
    ('workload = "decode"\n[matrix]\nseed = [1]\n', "needs a name"),
    ('name = "a b"\nworkload = "decode"\n[matrix]\nseed = [1]\n', "needs a name"),
    ('name = "t"\nworkload = "decode"\n', "empty matrix"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = []\n', "matrix.seed must be a non-empty list"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1, 2]\n[[exclude]]\nseed = [1, 2]\n', "every combination"),
    ('name = "t"\n[matrix]\nseed = [1]\n', "needs a workload"),
    ('name = "t"\nworkload = "decod"\n[matrix]\nseed = [1]\n', "did you mean 'decode'?"),
    ('name = "t"\nworkload = "models"\n[matrix]\nformat = ["csv"]\n', "has no --out option"),
    ('name = "t"\nworkload = "kernel"\n[matrix]\nseed = [1]\n', '(workload = "kernel attention"?)'),
    ('name = "t"\nworkload = "kernel atention"\n[matrix]\nseed = [1]\n', "(did you mean 'attention'?)"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nbatch_sise = [1]\n', "no option --batch-sise (did you mean"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nbatch_size = ["one"]\n', "expected comma-separated integers"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nattn = ["flash9"]\n', "attn = 'flash9': choose from sdpa, eager"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nno_ceilings = ["yes"]\n', "is a flag"),
    ('name = "t"\nworkload = "decode"\n[params]\nbatch_size = [1, 2]\n[matrix]\nseed = [1]\n', "expected one value"),
    ('name = "t"\nworkload = "decode"\n[params]\nout = "x"\n[matrix]\nseed = [1]\n', "set by the sweep"),
    ('name = "t"\nworkload = "decode"\n[params]\nseed = 1\n[matrix]\nseed = [1]\n', "both in [params] and"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[[exclude]]\nsed = 1\n', "not a matrix axis"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\npartiton = "acc"\n', "unknown key(s) in [slurm]"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\npartition = "acc\\n#SBATCH --x"\n',
     "partition"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\ntime = "2 hours"\n', "time = '2 hours'"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\ngpus_per_task = -1\n', "gpus_per_task"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\ngpu_syntax = "gpu"\n', "gpu_syntax"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\nnodes = 2\n', "nodes must be 1"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\nsbatch = ["exclusive"]\n', "sbatch options"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\npreamble = ["a\\nb"]\n', "line break"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm.env]\n"A-B" = "1"\n', "not a valid variable"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\ncontainer = "x \'y"\n', "container"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\npython = "python3"\n', "absolute path"),
    ('name = "t"\nworkload = "decode"\n[matrix\n', "not valid TOML"),
])
def test_bad_sweep_files_exit_2_before_anything_is_written(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    for command in (["sweep", "plan", str(path)], ["sweep", "submit", str(path), "--out", str(tmp_path / "o")]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert message in err and err.startswith("llmbench sweep: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_missing_file_and_folder(tmp_path, capsys):
    assert cli.main(["sweep", "plan", str(tmp_path / "none.toml")]) == 2
    assert cli.main(["sweep", "status", str(tmp_path)]) == 2
    assert cli.main(["sweep", "submit", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no sweep file" in err and "holds no sweep" in err and "--resume" in err


def test_plan_prints_count_and_preview(tmp_path, capsys):
    assert cli.main(["sweep", "plan", str(write(tmp_path, BASE)), "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "8 points" in out and "and 5 more" in out
    assert "llmbench decode --prompt-len 8 --new-tokens 3 --model tiny-llama --dtype bf16 --batch-size 1" in out


def test_distributed_workload_launches_under_torchrun(tmp_path, monkeypatch):
    real = cli.build_parser

    def with_train():
        parser = real()
        sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
        train = sub.add_parser("train")
        train.add_argument("--nproc", type=int, default=1)
        train.add_argument("--steps", type=int, default=1)
        train.add_argument("--out")
        return parser

    monkeypatch.setattr(cli, "build_parser", with_train)
    s = plan(tmp_path, 'name = "t"\nworkload = "train"\n[matrix]\nsteps = [1]\n[[include]]\nnproc = 2\n'
                       '[slurm]\ngpus_per_task = 4\n')
    assert [(p.argv, p.nproc) for p in s.points] == [(["train", "--steps", "1", "--nproc", "4"], 4),
                                                    (["train", "--nproc", "2"], 2)]
    command = sweep.point_command({"argv": s.points[1].argv, "nproc": 2}, "/py", tmp_path)
    assert command == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "harness",
                       "train", "--nproc", "2", "--out", str(tmp_path)]
    with pytest.raises(UserError, match="nproc = 8 but"):
        plan(tmp_path, 'name = "t"\nworkload = "train"\n[matrix]\nnproc = [8]\n[slurm]\ngpus_per_task = 4\n')


def test_directives_and_gpu_syntax():
    opts = backend.SlurmOptions.from_table({"partition": "acc", "account": "ehpc01", "qos": "acc_debug",
                                            "time": "02:00:00", "gpus_per_task": 1, "cpus_per_task": 20,
                                            "mem": "64G", "sbatch": ["--exclusive", "--constraint=hbm&x"]})
    lines = opts.directives("n")
    assert "#SBATCH --gres=gpu:1" in lines and "#SBATCH --cpus-per-task=20" in lines
    assert "#SBATCH --constraint=hbm&x" in lines and "#SBATCH --mem=64G" in lines
    collect = opts.directives("n", collect=True)
    assert "#SBATCH --job-name=n-collect" in collect and not any("gpu" in line or "exclusive" in line
                                                                  for line in collect)
    gpus = backend.SlurmOptions.from_table({"gpus_per_task": 4, "gpu_syntax": "gpus", "gpu_type": "h100"})
    assert "#SBATCH --gpus=h100:4" in gpus.directives("n")


def test_array_chunks_respect_max_array_size():
    chunks = backend.array_chunks([9, 3, 4, 5, 7, 10], 1001)
    assert [(c.offset, c.spec()) for c in chunks] == [(3, "0-2,4,6-7")]
    chunks = backend.array_chunks(range(10), 4)
    assert [(c.offset, c.spec(2)) for c in chunks] == [(0, "0-3%2"), (4, "0-3%2"), (8, "0-1%2")]


def test_ceiling_workloads_match():
    assert sweep.CEILING_WORKLOADS == ceilings.CEILING_WORKLOADS


EVIL = "$(touch {pwned}); `touch {pwned}` ' \" \\ ;"


def test_script_quotes_every_value(tmp_path, capsys):
    pwned = tmp_path / "pwned"
    stub = tmp_path / "py"
    stub.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$(dirname "$0")/argv"\nenv > "$(dirname "$0")/env"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "o u$t"
    text = f"""
        name = "evil"
        workload = "decode"
        out = "{out}"
        [matrix]
        model = ["x; touch {pwned}"]
        [slurm]
        python = "{stub}"
        container = "env IN_CONTAINER='yes it is'"
        [slurm.env]
        EVIL = '''{EVIL.format(pwned=pwned)}'''
    """
    path = write(tmp_path, text)
    assert cli.main(["sweep", "submit", str(path), "--dry-run"]) == 0
    assert not out.exists() and not pwned.exists()
    script = capsys.readouterr().out.split(f"\n# {out / 'collect.sbatch'}")[0].split("\n", 1)[1]
    (tmp_path / "s.sh").write_text(script)
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": "2"}
    result = subprocess.run(["bash", str(tmp_path / "s.sh"), "3"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not pwned.exists()
    assert (tmp_path / "argv").read_text().splitlines() == ["-m", "harness.sweep", "task", str(out), "--index", "5"]
    seen = (tmp_path / "env").read_text()
    assert f"EVIL={EVIL.format(pwned=pwned)}" in seen and "IN_CONTAINER=yes it is" in seen
    points = sweep.load(path).points
    assert points[0].argv == ["decode", "--model", f"x; touch {pwned}"]  # a list element, never shell text


@pytest.fixture()
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, scontrol and squeue stand-ins: sbatch logs its argv and prints increasing job ids."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": 'n=$(( $(cat "$D/n" 2>/dev/null || echo 100) + 1 )); echo $n > "$D/n"; '
                  'echo "$*" >> "$D/calls"; echo "$n;cluster"',
        "scontrol": 'echo "MaxArraySize            = 3"',
        "squeue": 'cat "$D/queue" 2>/dev/null || true',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/bash\nD={bin_dir}\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_dry_run_submits_nothing(tmp_path, fake_slurm, capsys):
    assert cli.main(["sweep", "submit", str(write(tmp_path, BASE)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {tmp_path / 'out' / 'sweep.sbatch'}\n#!/bin/bash\n#SBATCH --job-name=t\n")
    assert "--array=0-2 " in out and "--array=0-1 " in out and "nothing was submitted" in out
    assert not (fake_slurm / "calls").exists() and not (tmp_path / "out").exists()


def test_submit_splits_arrays_and_chains_collect(tmp_path, fake_slurm, capsys):
    path = write(tmp_path, BASE + "[slurm]\nmax_concurrent = 2\n")
    assert cli.main(["sweep", "submit", str(path)]) == 0
    calls = (fake_slurm / "calls").read_text().splitlines()
    out = tmp_path / "out"
    assert calls == [
        f"--parsable --array=0-2%2 --output={out}/logs/slurm-%A_%a.out {out}/sweep.sbatch 0",
        f"--parsable --array=0-2%2 --output={out}/logs/slurm-%A_%a.out {out}/sweep.sbatch 3",
        f"--parsable --array=0-1%2 --output={out}/logs/slurm-%A_%a.out {out}/sweep.sbatch 6",
        f"--parsable --dependency=afterany:101:102:103 --output={out}/logs/collect-%j.out {out}/collect.sbatch",
    ]
    manifest = sweep.read_manifest(out)
    assert [j["id"] for j in manifest["jobs"]] == ["101", "102", "103", "104"]
    assert (out / "sweep.sbatch").read_text().startswith("#!/bin/bash\n")
    assert "submitted 8 point(s)" in capsys.readouterr().out
    assert cli.main(["sweep", "submit", str(path)]) == 2  # the folder holds it now: resume instead
    assert "--resume" in capsys.readouterr().err

    (fake_slurm / "queue").write_text("102_1\n")
    assert cli.main(["sweep", "submit", str(out), "--resume"]) == 2
    assert "still queued" in capsys.readouterr().err
    (fake_slurm / "queue").unlink()
    for index, state in ((0, "done"), (1, "failed"), (2, "oom"), (3, "running")):
        (out / "tasks" / f"{index}.json").write_text(json.dumps({"index": index, "state": state}))
    assert cli.main(["sweep", "submit", str(out), "--resume"]) == 0
    calls = (fake_slurm / "calls").read_text().splitlines()[4:]  # failed, lost (running) and pending points
    assert [(c.split()[1], c.split()[-1]) for c in calls[:3]] == [("--array=0,2%2", "1"), ("--array=0-2%2", "4"),
                                                                   ("--array=0%2", "7")]
    assert "--dependency=afterany:105:106:107 " in calls[3]


def test_sbatch_refusal_is_one_clear_line(tmp_path, fake_slurm, capsys):
    (fake_slurm / "sbatch").write_text("#!/bin/bash\necho 'sbatch: error: invalid partition specified: acc' >&2\n"
                                       "exit 1\n")
    assert cli.main(["sweep", "submit", str(write(tmp_path, BASE))]) == 2
    assert "sbatch refused the job: sbatch: error: invalid partition specified: acc" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing queued, nothing left behind: fix the file and submit again


def fake_point(monkeypatch, code):
    """Make every point run ``python -c code`` (with the staging folder as argv[1]) instead of llmbench."""
    monkeypatch.setattr(sweep, "point_command", lambda point, python, out: [python, "-c", code, str(out)])


RECORD = ("import sys; from harness.records import append_record, make_record; "
          "append_record(sys.argv[1] + '/records.jsonl', make_record(run_id='r', point={{'workload': 'decode'}}, "
          "status='{status}', error='{error}')); sys.exit({code})")


@pytest.mark.parametrize("code, state, status", [
    (RECORD.format(status="ok", error="", code=0), "done", "ok"),
    (RECORD.format(status="oom", error="CUDA out of memory", code=1), "oom", "oom"),
    ("import sys; print('torch.OutOfMemoryError: CUDA out of memory'); sys.exit(1)", "oom", "oom"),
    ("import sys; print('boom: bad things'); sys.exit(3)", "failed", "failed"),
    ("pass", "failed", "failed"),
])
def test_task_outcomes(tmp_path, monkeypatch, code, state, status):
    s = plan(tmp_path, BASE)
    sweep.prepare(s, sys.executable)
    fake_point(monkeypatch, code)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    assert sweep.run_task(s.out, 2, quiet=True) == state
    task = json.loads((s.out / "tasks" / "2.json").read_text())
    assert task["state"] == state and task["attempt"] == 1 and task["slurm_array_job_id"] == "77"
    assert task["finished"] >= task["started"]
    (record,) = read_records([s.out / RECORDS_FILE])
    assert record["status"] == status and record["sweep"] == "t" and record["sweep_index"] == 2
    assert record["sweep_point_id"] == s.points[2].id
    if state == "failed":
        assert task["error"].strip()
    if code == "pass":
        assert "wrote no record" in task["error"]
    assert not (s.out / "work" / "2").exists()


def test_ceilings_already_measured_are_reused_not_copied(tmp_path, monkeypatch):
    from harness.records import append_record, make_record

    s = plan(tmp_path, BASE)
    sweep.prepare(s, sys.executable)
    append_record(s.out / RECORDS_FILE, make_record(run_id="p", point={"workload": "copy"},
                                                    derived={"achieved_gbps": 9.0}))
    fake_point(monkeypatch, "import sys, shutil; shutil.copy(sys.argv[1] + '/records.jsonl', sys.argv[1] + '/../seen');"
                            + RECORD.format(status="ok", error="", code=0).split(";", 1)[1])
    assert sweep.run_task(s.out, 0, quiet=True) == "done"
    assert [r["workload"] for r in read_records([s.out / "work" / "seen"])] == ["copy"]
    assert [r["workload"] for r in read_records([s.out / RECORDS_FILE])] == ["copy", "decode"]


def test_local_run_of_tiny_points(tmp_path, capsys):
    path = write(tmp_path, f"""
        name = "local"
        workload = "decode"
        out = "{{out}}"
        [params]
        prompt_len = 8
        new_tokens = 3
        repeats = 1
        warmup = 0
        dtype = "fp32"
        no_ceilings = true
        [matrix]
        model = ["tiny-gpt2", "{tmp_path / 'missing'}"]
    """)
    assert cli.main(["sweep", "run", str(path)]) == 1
    captured = capsys.readouterr()
    assert "done 1  failed 1  oom 0  running 0  pending 0" in captured.out and "report:" in captured.out
    out = tmp_path / "out"
    records = read_records([out / RECORDS_FILE])
    assert [(r["model"], r["status"], r["sweep_index"]) for r in records] == [
        ("tiny-gpt2", "ok", 0), (str(tmp_path / "missing"), "failed", 1)]
    assert "does not exist" in json.loads((out / "tasks" / "1.json").read_text())["error"]
    assert (out / "report" / "report.md").exists() and (out / "logs" / "point-0.log").read_text()


def test_time_limit_sigterm_marks_the_point_failed(tmp_path, monkeypatch):
    import signal
    import threading

    before = signal.getsignal(signal.SIGTERM)
    s = plan(tmp_path, BASE)
    sweep.prepare(s, sys.executable)
    fake_point(monkeypatch, "import sys, time; print('sleep' + 'ing', flush=True); time.sleep(60)")
    log = s.out / "logs" / "point-0.log"
    # wait for the point's own output (the log's header already holds its code), then play the time limit
    threading.Thread(target=lambda: (_wait_for_text(log, "sleeping\n"), os.kill(os.getpid(), signal.SIGTERM))).start()
    assert sweep.run_task(s.out, 0, quiet=True) == "failed"
    task = json.loads((s.out / "tasks" / "0.json").read_text())
    assert task["error"].startswith("terminated by SIGTERM") and "sleeping" in task["error"]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler lives only while the point runs


def _wait_for_text(path, text, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (path.exists() and text in path.read_text()):
        time.sleep(0.05)
