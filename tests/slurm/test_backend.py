"""The SLURM backend without a cluster: #SBATCH directives and array chunks below MaxArraySize."""

from slurm import backend


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
