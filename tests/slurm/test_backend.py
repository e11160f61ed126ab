"""The SLURM backend without a cluster: #SBATCH directives, extra sbatch lines as sbatch reads them, array
chunks below MaxArraySize and back, and what squeue says (or that it cannot tell)."""

import os

import pytest

from slurm import backend
from workloads.errors import UserError


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


def test_directive_words_split_as_sbatch_does():
    words = backend.directive_words
    assert words("--exclusive") == ["--exclusive"] and words("  --exclusive  # why ") == ["--exclusive"]
    assert words("--exclusive user") == ["--exclusive", "user"] and words("--comment=a\tb") == ["--comment=a", "b"]
    assert words('--comment="a b"') == ["--comment=a b"] == words("--comment='a b'") == words(r"--comment=a\ b")
    assert words("--comment=a#b") == ["--comment=a"] and words("# all comment") == []
    with pytest.raises(ValueError, match='unmatched "'):
        words('--comment="a b')


@pytest.mark.parametrize("line, ok", [
    ("--exclusive", True), ("--exclusive=user", True), ('--comment="two words"', True), ("--gres=gpu:4 # why", True),
    ("-pdebug", True), ("--exclusive user", False), ("-p debug", False), ("--partition debug", False),
    ("--comment=a b", False), ('--comment="a b', False), ("exclusive", False), ("#", False), ("-", False),
])
def test_extra_sbatch_lines_are_one_option_each(line, ok):
    if ok:
        assert backend.SlurmOptions.from_table({"sbatch": [line]}).sbatch == (line,)
    else:
        with pytest.raises(UserError, match=r"\[slurm\] sbatch"):
            backend.SlurmOptions.from_table({"sbatch": line})


def test_spec_indices_invert_array_specs():
    for indices in ([0], [0, 1, 2, 5, 7, 8], [3, 9, 10, 11, 20]):
        for chunk in backend.array_chunks(indices, 1001):
            assert [chunk.offset + i for i in backend.spec_indices(chunk.spec(4))] == list(chunk.indices)


def test_queue_reads_squeue_and_says_when_it_cannot_tell(tmp_path, monkeypatch):
    squeue = tmp_path / "squeue"
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")

    def answer(script):
        squeue.write_text(f"#!/bin/bash\necho \"$*\" > {tmp_path}/args\n{script}\n")
        squeue.chmod(0o755)
        return backend.queue(["12", "9", "12"])

    assert answer("printf '12_0\\n12_3\\n9\\n'") == {"12_0", "12_3", "9"}
    assert (tmp_path / "args").read_text().split() == ["--noheader", "--array", "--format=%i", "--jobs=9,12"]
    assert backend.queued(["12", "9", "30"]) == ["12", "9"]
    assert answer("echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1") == set()
    assert answer("echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1") is None
    assert backend.queue([]) == set()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert backend.queue(["1"]) is None and backend.queued(["1"]) == []


def test_multi_node_directives_one_task_per_node_and_gpus_per_node():
    opts = backend.SlurmOptions.from_table({"nodes": 2, "gpus_per_node": 4, "gpu_type": "h100"})
    lines = opts.directives("n")
    assert "#SBATCH --nodes=2" in lines and "#SBATCH --ntasks-per-node=1" in lines and "#SBATCH --gres=gpu:h100:4" in lines
    assert "#SBATCH --ntasks=1" not in lines and opts.gpus == 4
    assert "scontrol show hostnames" in opts.launch_lines()
    collect = opts.directives("n", collect=True)
    assert "#SBATCH --nodes=1" in collect and "#SBATCH --ntasks=1" in collect
    whole_job = backend.SlurmOptions.from_table({"nodes": 2, "gpus_per_task": 4, "gpu_syntax": "gpus"})
    assert "#SBATCH --gpus=8" in whole_job.directives("n")  # --gpus counts for the whole job
    one = backend.SlurmOptions.from_table({"gpus_per_task": 2})
    assert one.launch_lines() == "" and "#SBATCH --ntasks=1" in one.directives("n")
    with pytest.raises(UserError, match="they are the same number"):
        backend.SlurmOptions.from_table({"gpus_per_task": 2, "gpus_per_node": 4})
    with pytest.raises(UserError, match="nodes must be an integer >= 1"):
        backend.SlurmOptions.from_table({"nodes": 0})
