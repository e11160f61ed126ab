"""``llmbench sweep``: clear errors before anything is written (bad points included), plan previews, safe
scripts, dry runs, submission and --resume against stand-in SLURM commands (an old sweep's folder too),
status that tells lost and never-started points apart, Ctrl-C in a local run, and a local run of tiny
points."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from harness import cli, sweep, sweep_tasks
from harness.commands import sweep as command
from harness.records import RECORDS_FILE, read_records


def write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("{out}", str(tmp_path / "out")))
    return path


@pytest.fixture(scope="module")
def parser():
    """The root ``llmbench`` parser, built by the CLI as for a real call."""
    return cli.build_parser()


def sweep_step(parser):
    def run(*words) -> int:
        args = parser.parse_args(["sweep", *map(str, words)])
        args.parser = parser
        return command.run(args)

    return run


@pytest.fixture()
def llmbench_sweep(parser):
    """Parse ``llmbench sweep ARGS`` with the root parser and run the step, as the CLI does."""
    return sweep_step(parser)


@pytest.fixture()
def unchecked_sweep(unchecked_parser):
    """``llmbench_sweep`` with the commands' ``validate`` left out, for values they would refuse at plan time."""
    return sweep_step(unchecked_parser)


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
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\nnodes = 2\n', "over the GPUs of one node"),
    ('name = "t"\nworkload = "kernel attention"\n[matrix]\nseq_len = ["64"]\n[slurm]\ngpus_per_task = 4\n',
     "the other 3 would sit idle"),
    ('name = "t"\nworkload = "finetune"\n[matrix]\nseed = [1]\n[slurm]\ngpus_per_task = 2\ngpus_per_node = 4\n',
     "they are the same number"),
    ('name = "t"\nworkload = "finetune"\n[matrix]\nseed = [1]\n[slurm]\nnodes = 2\ncontainer = "apptainer exec x"\n',
     "nodes > 1 with a container is not supported"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\nsbatch = ["exclusive"]\n', "sbatch options"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\npreamble = ["a\\nb"]\n', "line break"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm.env]\n"A-B" = "1"\n', "not a valid variable"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\ncontainer = "x \'y"\n', "container"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\npython = "python3"\n', "absolute path"),
    ('name = "t"\nworkload = "decode"\n[matrix\n', "not valid TOML"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\nsbatch = ["--exclusive user"]\n',
     "got '--exclusive user' (2 words"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\nsbatch = ["--comment=a b"]\n', "2 words"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\nsbatch = ["--comment=\\"a b"]\n',
     "unmatched \" quote"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1]\n[slurm]\nsbatch = ["# --exclusive"]\n', "got '# --exclusive'"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nmodel = ["--help"]\n', "would read it as an option"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nmodel = ["tiny-gpt2", "-x"]\n', "model = '-x' starts with '-'"),
    ('name = "t"\nworkload = "report"\n[matrix]\nformat = ["md"]\n', "needs the argument(s) RESULTS_DIR"),
    ('name = "t"\nworkload = "decode"\n[matrix]\nseed = [1979-05-27]\n', "a TOML date or time"),
])
def test_bad_sweep_files_exit_2_before_anything_is_written(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    for words in (["sweep", "plan", str(path)], ["sweep", "submit", str(path), "--out", str(tmp_path / "o")]):
        assert cli.main(words) == 2
        err = capsys.readouterr().err
        assert message in err and err.startswith("llmbench sweep: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_missing_file_and_folder(tmp_path, capsys):
    assert cli.main(["sweep", "plan", str(tmp_path / "none.toml")]) == 2
    assert cli.main(["sweep", "status", str(tmp_path)]) == 2
    assert cli.main(["sweep", "submit", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no sweep file" in err and "holds no sweep" in err and "--resume" in err


@pytest.mark.parametrize("words, message", [
    (["plan", "f.toml", "--limit", "0"], "must be at least 1"),
    (["plan", "f.toml", "--out", ""], "expected a folder path"),
    (["task", "d", "--index", "-1"], "must not be negative"),
    (["status", " "], "expected a folder path"),
])
def test_malformed_options_are_refused_at_parse_time(parser, capsys, words, message):
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["sweep", *words])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_plan_prints_count_and_preview(tmp_path, capsys, llmbench_sweep, base_sweep):
    assert llmbench_sweep("plan", write(tmp_path, base_sweep), "--limit", "3") == 0
    out = capsys.readouterr().out
    assert "8 points" in out and "and 5 more" in out
    assert "llmbench decode --prompt-len 8 --new-tokens 3 --model tiny-llama --dtype bf16 --batch-size 1" in out


def test_command_module_imports_nothing_heavy():
    """Array tasks and `llmbench --help` import this module; the point's own process loads torch."""
    code = ("import sys; import harness.commands.sweep; "
            "heavy = [m for m in ('torch', 'transformers', 'numpy', 'pandas', 'tqdm', 'harness.cli') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


EVIL = "$(touch {pwned}); `touch {pwned}` ' \" \\ ;"


def test_script_quotes_every_value(tmp_path, capsys, unchecked_parser, unchecked_sweep):
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
    assert unchecked_sweep("submit", path, "--dry-run") == 0  # (decode's own checks refuse that model path)
    assert not out.exists() and not pwned.exists()
    script = capsys.readouterr().out.split(f"\n# {out / 'collect.sbatch'}")[0].split("\n", 1)[1]
    (tmp_path / "s.sh").write_text(script)
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": "2"}
    result = subprocess.run(["bash", str(tmp_path / "s.sh"), "3"], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert not pwned.exists()
    assert (tmp_path / "argv").read_text().splitlines() == ["-m", "harness", "sweep", "task", str(out),
                                                            "--index", "5"]
    seen = (tmp_path / "env").read_text()
    assert f"EVIL={EVIL.format(pwned=pwned)}" in seen and "IN_CONTAINER=yes it is" in seen
    points = sweep.load(path, unchecked_parser).points
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


def test_dry_run_submits_nothing(tmp_path, fake_slurm, capsys, llmbench_sweep, base_sweep):
    assert llmbench_sweep("submit", write(tmp_path, base_sweep), "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {tmp_path / 'out' / 'sweep.sbatch'}\n#!/bin/bash\n#SBATCH --job-name=t\n")
    assert "--array=0-2 " in out and "--array=0-1 " in out and "nothing was submitted" in out
    assert not (fake_slurm / "calls").exists() and not (tmp_path / "out").exists()


def test_submit_splits_arrays_and_chains_collect(tmp_path, fake_slurm, capsys, llmbench_sweep, base_sweep):
    path = write(tmp_path, base_sweep + "[slurm]\nmax_concurrent = 2\n")
    assert llmbench_sweep("submit", path) == 0
    calls = (fake_slurm / "calls").read_text().splitlines()
    out = tmp_path / "out"
    assert calls == [
        f"--parsable --array=0-2%2 --output={out}/logs/slurm-%A_%a.out {out}/sweep.sbatch 0",
        f"--parsable --array=0-2%2 --output={out}/logs/slurm-%A_%a.out {out}/sweep.sbatch 3",
        f"--parsable --array=0-1%2 --output={out}/logs/slurm-%A_%a.out {out}/sweep.sbatch 6",
        f"--parsable --dependency=afterany:101:102:103 --output={out}/logs/collect-%j.out {out}/collect.sbatch",
    ]
    manifest = sweep_tasks.read_manifest(out)
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
    assert llmbench_sweep("submit", out, "--resume") == 0
    calls = (fake_slurm / "calls").read_text().splitlines()[4:]  # failed, lost (running) and pending points
    assert [(c.split()[1], c.split()[-1]) for c in calls[:3]] == [("--array=0,2%2", "1"), ("--array=0-2%2", "4"),
                                                                   ("--array=0%2", "7")]
    assert "--dependency=afterany:105:106:107 " in calls[3]


def test_resume_of_a_sweep_submitted_by_the_first_version(tmp_path, fake_slurm, capsys, llmbench_sweep):
    """A folder written before the steps moved into the CLI: its manifest loads as it is, and --resume
    renders the scripts again, so the resubmitted tasks run `python -m harness sweep task`."""
    out = tmp_path / "old"
    (out / "tasks").mkdir(parents=True)
    (out / "logs").mkdir()
    manifest = {
        "manifest_version": 1, "name": "old", "created": "2025-01-01T00:00:00+00:00", "dir": str(out),
        "cwd": str(tmp_path), "python": "/venv/bin/python", "env": {"OMP_NUM_THREADS": "1"},
        "slurm": {"partition": "debug", "max_concurrent": 2, "env": {"OMP_NUM_THREADS": 1}},
        "jobs": [{"id": "90", "kind": "array", "array": "0-2%2", "offset": 0, "points": 3,
                  "submitted": "2025-01-01T00:00:01+00:00"},
                 {"id": "91", "kind": "collect", "after": ["90"], "submitted": "2025-01-01T00:00:01+00:00"}],
        "points": [{"index": i, "id": f"{i:012x}", "workload": "decode", "params": {"seed": i},
                    "argv": ["decode", "--seed", str(i)], "nproc": 1} for i in range(3)],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    old = f"exec /venv/bin/python -m harness.sweep task {out} --index \"$index\"\n"
    (out / "sweep.sbatch").write_text(old)
    (out / "collect.sbatch").write_text(f"exec /venv/bin/python -m harness.sweep collect {out}\n")
    (out / "tasks" / "0.json").write_text(json.dumps({"index": 0, "id": "000000000000", "state": "done"}))
    (out / "tasks" / "2.json").write_text(json.dumps({"index": 2, "id": "000000000002", "state": "failed",
                                                       "error": "boom"}))

    assert llmbench_squeue_gone_status(llmbench_sweep, out, capsys) == (
        "done 1  failed 1  oom 0  interrupted 0  lost 0  running 0  pending 0  never-started 1")
    assert llmbench_sweep("submit", out, "--resume") == 0
    assert "submitted 2 point(s) of sweep old" in capsys.readouterr().out
    calls = (fake_slurm / "calls").read_text().splitlines()
    assert calls[0] == f"--parsable --array=0-1%2 --output={out}/logs/slurm-%A_%a.out {out}/sweep.sbatch 1"
    array, collect = (out / "sweep.sbatch").read_text(), (out / "collect.sbatch").read_text()
    assert "harness.sweep" not in array + collect and "#SBATCH --partition=debug" in array
    assert f"cmd=(/venv/bin/python -m harness sweep task {out} --index \"$index\")" in array
    assert f"cmd=(/venv/bin/python -m harness sweep collect {out})" in collect
    assert "export OMP_NUM_THREADS=1" in array
    jobs = sweep_tasks.read_manifest(out)["jobs"]
    assert [j["id"] for j in jobs] == ["90", "91", "101", "102"] and jobs[2]["array"] == "0-1%2"


def llmbench_squeue_gone_status(llmbench_sweep, out, capsys) -> str:
    """The counts line of `sweep status` while squeue lists none of the sweep's jobs."""
    assert llmbench_sweep("status", out) == 0
    status = capsys.readouterr().out
    assert "never-started  [1]" in status and "array task 90_1 left the queue without starting" in status
    return status.splitlines()[1]


def test_sbatch_refusal_is_one_clear_line(tmp_path, fake_slurm, capsys, base_sweep):
    (fake_slurm / "sbatch").write_text("#!/bin/bash\necho 'sbatch: error: invalid partition specified: acc' >&2\n"
                                       "exit 1\n")
    assert cli.main(["sweep", "submit", str(write(tmp_path, base_sweep))]) == 2
    assert "sbatch refused the job: sbatch: error: invalid partition specified: acc" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing queued, nothing left behind: fix the file and submit again


def test_local_run_of_tiny_points(tmp_path, capsys, llmbench_sweep):
    """Two tiny points here: one runs, one fails at run time (a GPU index no machine has passes the plan,
    which does not look at devices) and leaves a failure record filed under the device it asked for."""
    path = write(tmp_path, """
        name = "local"
        workload = "decode"
        out = "{out}"
        [params]
        model = "tiny-gpt2"
        prompt_len = 8
        new_tokens = 3
        repeats = 1
        warmup = 0
        dtype = "fp32"
        no_ceilings = true
        [matrix]
        device = ["cpu", "cuda:99"]
    """)
    assert llmbench_sweep("run", path) == 1
    captured = capsys.readouterr()
    assert "done 1  failed 1  oom 0  interrupted 0  lost 0  running 0  pending 0  never-started 0" in captured.out
    assert "report:" in captured.out
    out = tmp_path / "out"
    records = read_records([out / RECORDS_FILE])
    assert [(r["device"], r["status"], r["sweep_index"]) for r in records] == [("cpu", "ok", 0), ("cuda:99", "failed", 1)]
    assert records[1]["env"]["device_type"] == "cuda" and records[1]["env"]["device_name"]
    assert records[1]["env"]["host"] == socket.gethostname()
    assert "cuda:99" in json.loads((out / "tasks" / "1.json").read_text())["error"]
    assert (out / "report" / "report.md").exists() and (out / "logs" / "point-0.log").read_text()
    report = (out / "report" / "report.md").read_text()
    assert "## unknown" not in report
    capsys.readouterr()
    assert llmbench_sweep("run", path) == 1  # again: the done point stays, the failed one runs again
    assert "1 of 2 points already finished" in capsys.readouterr().err
    assert json.loads((out / "tasks" / "1.json").read_text())["attempt"] == 2


def fake_points(monkeypatch, code):
    """Every point runs ``python -c code`` (staging folder as argv[1], index as argv[2]) instead of llmbench."""
    monkeypatch.setattr(sweep_tasks, "point_command",
                        lambda point, python, out, opts=None: [python, "-c", code, str(out), str(out.name)])


OK_RECORD = ("import sys; from harness.records import append_record, make_record; "
             "append_record(sys.argv[1] + '/records.jsonl', make_record(run_id='r', point={'workload': 'decode'}))")


def test_ctrl_c_in_a_local_run_stops_the_point_and_the_sweep(tmp_path, monkeypatch, capsys, llmbench_sweep,
                                                            base_sweep):
    fake_points(monkeypatch, "import sys, time\nif sys.argv[2] == '1':\n    print('sleep' + 'ing', flush=True); "
                             "time.sleep(60)\n" + OK_RECORD)
    monkeypatch.setattr(sweep_tasks, "collect", lambda directory: pytest.fail("no report after Ctrl-C"))
    path = write(tmp_path, base_sweep)
    log = tmp_path / "out" / "logs" / "point-1.log"

    def press_ctrl_c():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and "sleeping\n" in log.read_text()):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c).start()
    assert llmbench_sweep("run", path) == 130
    captured = capsys.readouterr()
    assert "done 1  failed 0  oom 0  interrupted 1  lost 0  running 0  pending 6" in captured.out
    assert "point 1 was stopped and marked interrupted" in captured.err
    out = tmp_path / "out"
    task = json.loads((out / "tasks" / "1.json").read_text())
    assert task["state"] == "interrupted" and not sweep_tasks.pid_alive(task["point_pid"])
    assert not (out / "tasks" / "2.json").exists()  # the sweep stopped there
    assert [r["sweep_index"] for r in read_records([out / RECORDS_FILE])] == [0]

    fake_points(monkeypatch, OK_RECORD)
    monkeypatch.setattr(sweep_tasks, "collect", lambda directory: 0)
    assert llmbench_sweep("run", path) == 0  # goes on: the interrupted point and the rest
    assert json.loads((out / "tasks" / "1.json").read_text())["attempt"] == 2


def test_local_run_reruns_lost_points_and_leaves_running_ones(tmp_path, monkeypatch, capsys, llmbench_sweep,
                                                             base_sweep):
    path = write(tmp_path, base_sweep)
    fake_points(monkeypatch, OK_RECORD)
    monkeypatch.setattr(sweep_tasks, "collect", lambda directory: 0)
    out = tmp_path / "out"
    (out / "tasks").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    beat = datetime_now()
    host = socket.gethostname()
    (out / "tasks" / "0.json").write_text(json.dumps({"index": 0, "state": "running", "host": host, "pid": dead.pid,
                                                      "heartbeat": beat, "heartbeat_s": 30, "attempt": 1}))
    (out / "tasks" / "1.json").write_text(json.dumps({"index": 1, "state": "running", "host": host,
                                                      "pid": os.getpid(), "heartbeat": beat, "heartbeat_s": 30}))
    assert llmbench_sweep("run", path) == 1  # point 1 is running elsewhere: not all done
    captured = capsys.readouterr()
    assert "1 point(s) are running elsewhere" in captured.err
    assert "done 7  failed 0  oom 0  interrupted 0  lost 0  running 1  pending 0" in captured.out
    assert json.loads((out / "tasks" / "0.json").read_text())["attempt"] == 2


def datetime_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def test_status_names_lost_and_never_started_points(tmp_path, fake_slurm, capsys, llmbench_sweep, base_sweep):
    path = write(tmp_path, base_sweep)
    assert llmbench_sweep("submit", path) == 0
    out = tmp_path / "out"
    (out / "tasks" / "0.json").write_text(json.dumps({"index": 0, "state": "done"}))
    (out / "tasks" / "1.json").write_text(json.dumps({
        "index": 1, "state": "running", "host": "node9", "pid": 5, "heartbeat": datetime_now(), "heartbeat_s": 30,
        "slurm_array_job_id": "101", "slurm_array_task_id": "1"}))
    queued = "101_1\n101_2\n102_0\n102_1\n102_2\n103_0\n103_1"
    (fake_slurm / "queue").write_text(queued)  # squeue --array: one line per array task
    capsys.readouterr()
    assert llmbench_sweep("status", out) == 0
    assert "done 1  failed 0  oom 0  interrupted 0  lost 0  running 1  pending 6  never-started 0" in (
        capsys.readouterr().out)
    (fake_slurm / "queue").write_text(queued.split("\n", 2)[2])  # array 101 (points 0-2) has left the queue
    assert llmbench_sweep("status", out) == 0
    status = capsys.readouterr().out
    assert "done 1  failed 0  oom 0  interrupted 0  lost 1  running 0  pending 5  never-started 1" in status
    assert "lost  [1]" in status and "SLURM job 101_1 has left the queue" in status
    assert "never-started  [2]" in status and "array task 101_2 left the queue without starting" in status
    assert cli.main(["sweep", "submit", str(out), "--resume"]) == 2  # 102 is still queued
    (fake_slurm / "queue").write_text("")
    assert llmbench_sweep("submit", out, "--resume") == 0
    calls = (fake_slurm / "calls").read_text().splitlines()[4:]  # points 1 (lost) and 2-7 (never started)
    assert [(c.split()[1], c.split()[-1]) for c in calls[:3]] == [("--array=0-2", "1"), ("--array=0-2", "4"),
                                                                   ("--array=0", "7")]


def test_plan_refuses_a_point_its_command_refuses(tmp_path, capsys, parser, base_sweep):
    if not callable(sweep.parser_parts(parser)[0]["decode"].get_default("validate")):
        pytest.skip("`llmbench decode` has no validate yet")
    path = write(tmp_path, base_sweep.replace('"tiny-gpt2"]', '"tiny-gpt2", "tiny-lama"]'))
    for words in (["sweep", "plan", str(path)], ["sweep", "submit", str(path), "--dry-run"],
                  ["sweep", "run", str(path)]):
        assert cli.main(words) == 2
        err = capsys.readouterr().err
        assert err.startswith('llmbench sweep: error: point 8 (decode: prompt_len = 8, new_tokens = 3, model = '
                              '"tiny-lama", dtype = "bf16", batch_size = 1): unknown model preset') and (
            "(3 more of the 12 points are refused too)" in err) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


TWO_NODES = """
name = "ddp2"
workload = "finetune"
out = "{out}"

[params]
model = "llama-3.1-8b"
dtype = "bf16"

[matrix]
fsdp = [false, true]

[slurm]
partition = "acc"
time = "01:00:00"
nodes = 2
gpus_per_node = 4
cpus_per_task = 80
python = "{python}"
"""


def test_two_node_point_renders_srun_torchrun_at_the_first_node(tmp_path, capsys, llmbench_sweep):
    """The sbatch text of a 2-node sweep, checked whole; then the script run with a stand-in scontrol and
    python: the rendezvous endpoint is the first node of the job's list, at a port from the job id."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text('#!/bin/bash\n[ "$1 $2 $3" = "show hostnames gpu[017-018]" ] && '
                                   'printf "gpu017\\ngpu018\\n"\n')
    (fake / "python").write_text('#!/bin/bash\necho "endpoint=$LLMBENCH_RDZV_ENDPOINT args=$*"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    path = write(tmp_path, TWO_NODES.replace("{python}", str(fake / "python")))
    assert llmbench_sweep("plan", path) == 0
    assert "srun x2 nodes: torchrun --nnodes 2 --nproc-per-node 4: llmbench finetune --model llama-3.1-8b " \
           "--dtype bf16 --nproc 4" in capsys.readouterr().out
    assert llmbench_sweep("submit", path, "--dry-run") == 0
    out = capsys.readouterr().out
    directory = tmp_path / "out"
    script = out.split(f"# {directory / 'sweep.sbatch'}\n", 1)[1].split(f"\n# {directory / 'collect.sbatch'}", 1)[0]
    assert script == textwrap.dedent(f"""\
        #!/bin/bash
        #SBATCH --job-name=ddp2
        #SBATCH --partition=acc
        #SBATCH --time=01:00:00
        #SBATCH --nodes=2
        #SBATCH --ntasks-per-node=1
        #SBATCH --cpus-per-task=80
        #SBATCH --gres=gpu:4
        # llmbench sweep "ddp2": each array task runs one point of {directory / 'manifest.json'}
        # Submitted as:  sbatch --array=SPEC {directory / 'sweep.sbatch'} OFFSET   (point index = OFFSET + SLURM_ARRAY_TASK_ID)
        # Re-run a point by hand with the command this script echoes to its log.
        set -eo pipefail
        # 2 nodes: the task starts torchrun on each (srun), meeting at the first node
        export LLMBENCH_RDZV_ENDPOINT="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):$(( 29500 + SLURM_JOB_ID % 1000 ))"

        index=$(( ${{1:-0}} + ${{SLURM_ARRAY_TASK_ID:?this script runs as a SLURM array task}} ))
        cmd=({fake / 'python'} -m harness sweep task {directory} --index "$index")
        printf '+' && printf ' %q' "${{cmd[@]}}" && printf '\\n'
        exec "${{cmd[@]}}"
        """)
    collect = out.split(f"# {directory / 'collect.sbatch'}\n", 1)[1]
    assert "#SBATCH --nodes=1\n#SBATCH --ntasks=1\n" in collect and "RDZV" not in collect and "gres" not in collect
    (tmp_path / "sweep.sbatch").write_text(script)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu[017-018]",
           "SLURM_JOB_ID": "123456", "SLURM_ARRAY_TASK_ID": "1"}
    done = subprocess.run(["bash", str(tmp_path / "sweep.sbatch"), "0"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"endpoint=gpu017:29956 args=-m harness sweep task {directory} --index 1"


def test_a_two_node_sweep_does_not_run_here(tmp_path, capsys):
    path = write(tmp_path, TWO_NODES.replace("{python}", sys.executable))
    assert cli.main(["sweep", "run", str(path)]) == 2
    assert "nodes = 2: a multi-node sweep runs only on a cluster" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, points, nproc", [("scaling-h100", 6, [1, 1, 2, 2, 4, 4]),
                                                 ("tp-decode-h100", 5, [1, 2, 4, 4, 4]),
                                                 ("finetune-2nodes", 2, [4, 4])])
def test_the_multi_gpu_examples_plan(parser, name, points, nproc):
    plan = sweep.load(Path(__file__).resolve().parents[3] / "slurm" / "examples" / f"{name}.toml", parser)
    assert len(plan.points) == points and [p.nproc for p in plan.points] == nproc
