"""``llmbench env``: the environment block records are stamped with."""

import json

import torch

from harness import cli


def test_env(capsys):
    assert cli.main(["env", "--json", "--device", "cpu"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["device_type"] == "cpu" and env["torch"] == torch.__version__ and "slurm_job_id" in env
