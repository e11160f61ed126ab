"""A private single-node SLURM for the tests: munged, slurmctld and slurmd from the distribution's
packages, with their own key, socket, ports, config and state under a temp folder (loopback only).

It starts once per session when a test asks for ``slurm_cluster``, and is shut down by pid at the
end (jobs cancelled first). Without the packages or root it skips with the reason, unless
``LLMBENCH_REQUIRE_SLURM=1`` (CI), where it fails instead.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
SEARCH_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin"
MAX_ARRAY_SIZE = 4  # small, so a sweep of 6 points is split into two arrays for real

CONF = """\
ClusterName=llmbench-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket}
CredType=cred/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MaxArraySize={max_array_size}
MinJobAge=60
InactiveLimit=0
KillWait=5
NodeName=localhost CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    conf: Path
    base: Path

    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, check: bool = True) -> str:
        result = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
        return result.stdout

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text()[-1500:] for p in sorted((self.base / "log").glob("*")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.fixture(scope="session")
def slurm_cluster():
    required = os.environ.get("LLMBENCH_REQUIRE_SLURM") == "1"

    def unavailable(reason: str):
        if required:
            pytest.fail(f"LLMBENCH_REQUIRE_SLURM=1 but SLURM cannot start: {reason}")
        pytest.skip(f"no private SLURM: {reason}")

    missing = [d for d in DAEMONS if not shutil.which(d, path=SEARCH_PATH)]
    if missing:
        unavailable(f"{', '.join(missing)} not installed (apt-get install slurmctld slurmd munge slurm-client)")
    if os.geteuid() != 0:
        unavailable("slurmd must run as root")
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError:
        unavailable("there is no munge user")

    base = Path(tempfile.mkdtemp(prefix="llmbench-slurm-"))
    base.chmod(0o755)  # munged (user munge) must reach its socket below
    for sub in ("state", "spool", "log"):
        (base / sub).mkdir()
    munge_dir = base / "munge"
    munge_dir.mkdir(mode=0o755)
    os.chown(munge_dir, munge_user.pw_uid, munge_user.pw_gid)
    key, sock = munge_dir / "munge.key", munge_dir / "munge.socket"
    conf = base / "slurm.conf"
    conf.write_text(CONF.format(ctld_port=_free_port(), d_port=_free_port(), socket=sock, base=base,
                                max_array_size=MAX_ARRAY_SIZE, cpus=os.cpu_count()))
    cluster = Cluster(conf, base)
    procs: list[subprocess.Popen] = []

    def start(command, **kwargs):
        name = Path(command[0]).name
        log = open(base / "log" / f"{name}.out", "wb")  # noqa: SIM115 - the daemon keeps it
        procs.append(subprocess.Popen([shutil.which(command[0], path=SEARCH_PATH), *command[1:]], stdout=log,
                                      stderr=subprocess.STDOUT, env=cluster.env(), **kwargs))

    try:
        subprocess.run([shutil.which("mungekey", path=SEARCH_PATH), "--create", f"--keyfile={key}"], check=True,
                       capture_output=True, timeout=30)
        os.chown(key, munge_user.pw_uid, munge_user.pw_gid)
        start(["munged", "--foreground", f"--socket={sock}", f"--key-file={key}", f"--pid-file={munge_dir}/pid",
               f"--seed-file={munge_dir}/seed", f"--log-file={base}/log/munged.log"],
              user=munge_user.pw_uid, group=munge_user.pw_gid, extra_groups=[])
        if not _wait(sock.exists, 15):
            unavailable(f"munged did not create its socket\n{cluster.logs()}")
        start(["slurmctld", "-D", "-f", str(conf)])
        start(["slurmd", "-D", "-f", str(conf), "-N", "localhost"])
        if not _wait(lambda: cluster.run("sinfo", "--noheader", "--format=%t", check=False).strip() == "idle", 30):
            unavailable(f"the node did not come up idle\n{cluster.logs()}")
        yield cluster
    finally:
        if procs:
            cluster.run("scancel", "--user=root", check=False)
            _wait(lambda: not cluster.run("squeue", "--noheader", check=False).strip(), 15)
        for proc in reversed(procs):  # slurmd, slurmctld, munged, each by its own pid
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)
