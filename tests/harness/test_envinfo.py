"""The environment block (harness/envinfo.py): fields read on CPU, the CUDA branch, git, NVML, CPU name, Slurm ids."""

import os
import platform
import re
import socket
import subprocess
import sys
import types

import pytest
import torch

from harness import envinfo

SHA = re.compile(r"[0-9a-f]{40}(-dirty)?")


@pytest.fixture()
def fresh_caches():
    envinfo.git_sha.cache_clear()
    envinfo.nvidia_driver.cache_clear()
    yield
    envinfo.git_sha.cache_clear()
    envinfo.nvidia_driver.cache_clear()


def test_capture_on_cpu(monkeypatch):
    for var in envinfo.SLURM_VARS.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    env = envinfo.capture(torch.device("cpu"))
    assert env["device_type"] == "cpu"
    assert env["device_name"] == envinfo.cpu_name() == env["cpu"]
    assert env["device_count"] == 1
    assert env["compute_capability"] is None and env["driver"] is None
    assert env["cuda"] == torch.version.cuda
    assert env["torch"] == torch.__version__
    assert env["python"] == platform.python_version()
    assert env["host"] == socket.gethostname()
    assert env["os"] == platform.platform()
    assert env["cpu_count"] == os.cpu_count()
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["cuda_visible_devices"] == "2,3"
    assert env["nccl"] is None  # collectives over gloo on a CPU
    assert env["git_sha"] == envinfo.git_sha()
    assert env["llmbench"] is not None  # the project is installed in its environment
    for key in envinfo.SLURM_VARS:
        assert env[key] is None  # absent outside a job, never guessed


def test_capture_reads_slurm_ids_from_the_environment(monkeypatch):
    values = {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4200", "SLURM_ARRAY_TASK_ID": "7",
              "SLURM_PROCID": "0", "SLURM_JOB_PARTITION": "acc", "SLURM_JOB_NODELIST": "as01r1b[01-02]"}
    assert set(values) == set(envinfo.SLURM_VARS.values())
    for var, value in values.items():
        monkeypatch.setenv(var, value)
    env = envinfo.capture(torch.device("cpu"))
    assert env["slurm_job_id"] == "4242"
    assert env["slurm_array_job_id"] == "4200"
    assert env["slurm_array_task_id"] == "7"
    assert env["slurm_procid"] == "0"
    assert env["slurm_job_partition"] == "acc"
    assert env["slurm_nodelist"] == "as01r1b[01-02]"


def test_capture_on_cuda_reads_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(envinfo, "nvidia_driver", lambda: "550.54.15")
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 21, 5))
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    env = envinfo.capture(torch.device("cuda", 1))
    assert env["nccl"] == "2.21.5" and env["torchrun_nodes"] == "2"
    assert env["device_type"] == "cuda"
    assert env["device_name"] == "NVIDIA H100 80GB HBM3"
    assert env["device_count"] == 4
    assert env["compute_capability"] == "9.0"
    assert env["driver"] == "550.54.15"
    assert env["cpu"] == envinfo.cpu_name()


def test_device_name_on_cpu_is_the_cpu_name():
    name = envinfo.device_name(torch.device("cpu"))
    assert isinstance(name, str) and name
    assert name == envinfo.cpu_name()


def test_cpu_name_from_proc_cpuinfo(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763 64-Core Processor\n")
    monkeypatch.setattr(envinfo, "Path", lambda _: info)
    assert envinfo.cpu_name() == "AMD EPYC 7763 64-Core Processor"


def test_cpu_name_without_proc_falls_back_to_platform(monkeypatch, tmp_path):
    monkeypatch.setattr(envinfo, "Path", lambda _: tmp_path / "missing")
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert envinfo.cpu_name() == "aarch64"
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    assert envinfo.cpu_name() == "arm"


def test_git_sha_in_this_checkout(fresh_caches):
    sha = envinfo.git_sha()
    assert sha is not None and SHA.fullmatch(sha)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(envinfo.__file__)).stdout.strip()
    assert sha.split("-")[0] == head


def fake_git(head: str, status: str):
    def run(cmd, **kwargs):
        out = head if cmd[1] == "rev-parse" else status
        return subprocess.CompletedProcess(cmd, 0, stdout=out + "\n", stderr="")
    return run


def test_git_sha_marks_a_dirty_checkout(fresh_caches, monkeypatch):
    monkeypatch.setattr(subprocess, "run", fake_git("a" * 40, " M harness/cli.py"))
    assert envinfo.git_sha() == "a" * 40 + "-dirty"
    envinfo.git_sha.cache_clear()
    monkeypatch.setattr(subprocess, "run", fake_git("b" * 40, ""))
    assert envinfo.git_sha() == "b" * 40


@pytest.mark.parametrize("error", [FileNotFoundError(2, "No such file: git"),
                                   subprocess.CalledProcessError(128, ["git"]),
                                   subprocess.TimeoutExpired(["git"], 5)])
def test_git_sha_is_none_without_git_or_a_repository(fresh_caches, monkeypatch, error):
    def run(*args, **kwargs):
        raise error
    monkeypatch.setattr(subprocess, "run", run)
    assert envinfo.git_sha() is None


def test_nvidia_driver_is_none_without_nvml(fresh_caches, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert envinfo.nvidia_driver() is None


def test_nvidia_driver_reads_nvml_and_shuts_it_down(fresh_caches, monkeypatch):
    calls = []
    fake = types.SimpleNamespace(nvmlInit=lambda: calls.append("init"),
                                 nvmlSystemGetDriverVersion=lambda: "550.54.15",
                                 nvmlShutdown=lambda: calls.append("shutdown"))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert envinfo.nvidia_driver() == "550.54.15"
    assert calls == ["init", "shutdown"]


def test_nvidia_driver_is_none_when_nvml_fails(fresh_caches, monkeypatch):
    def init():
        raise RuntimeError("NVML Shared Library Not Found")
    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=init))
    assert envinfo.nvidia_driver() is None


def test_version_of_packages():
    assert envinfo._version("torch") is not None
    assert envinfo._version("no-such-package-llmbench-test") is None


def test_nccl_version_is_none_where_torch_has_none(monkeypatch):
    def missing():
        raise RuntimeError("NCCL is not available")

    monkeypatch.setattr(torch.cuda.nccl, "version", missing)
    assert envinfo.nccl_version() is None
