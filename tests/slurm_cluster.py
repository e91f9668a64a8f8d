"""A private single-node SLURM for tests: munged, slurmctld and slurmd of the machine's own
slurm-wlm, with their configuration, key, state, sockets and logs in one temporary folder, on
free ports, so that nothing of a system SLURM or munge is used or touched. Needs root (the
daemons run as SlurmUser=root and the jobs as the submitting user, root)."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel", "sinfo", "squeue")
# A requeued job may start again only once the launch credentials of its previous run have expired:
# slurm.conf(5), AuthInfo: cred_expire "also controls how long a requeued job must wait before
# starting again. The default value is 120 seconds" (the ~3 minutes issue 16 saw, with the
# scheduler's 60 s interval). Credentials only have to outlive the launch of a step on this node.
CRED_EXPIRE_S = 5
PARTITION = "test"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE"}
# Finished jobs stay visible to `scontrol show job` (no accounting database here) this long.
MIN_JOB_AGE_S = 3600
# Job ids per cluster. pytest-xdist starts one cluster per worker that runs these tests, and
# launch/slurm.sbatch takes its rendezvous id and port (29500 + id % 1000) from the job id:
# clusters that all began at job 1 had two jobs join one rendezvous, and one failed when the
# other's store closed. Each worker's cluster counts from its own hundred instead.
JOB_IDS_PER_CLUSTER = 100


def first_job_id() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...; unset without xdist
    return JOB_IDS_PER_CLUSTER * (int(worker.removeprefix("gw")) + 1)


def _which(name: str) -> str | None:
    # The daemons are in /usr/sbin, which is often not on a non-root PATH.
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def unavailable() -> str | None:
    """Why no private cluster can start here, or None."""
    missing = [name for name in BINARIES if _which(name) is None]
    if missing:
        return f"SLURM/munge not installed ({', '.join(missing)} not found): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "a private SLURM needs root (SlurmUser=root, jobs run as root)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root: Path, node: str, cpus: int):
        self.root = root
        self.node = node
        self.cpus = cpus
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def command(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60, check=check)

    def sbatch(self, args: list[str], env: dict[str, str], cwd: Path) -> int:
        """Submits as a user would (sbatch exports `env` to the job); the job id."""
        result = subprocess.run(["sbatch", "--parsable", *args], env={**env, "SLURM_CONF": str(self.conf)},
                                cwd=cwd, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as fields: JobState, ExitCode, Restarts, Reason, ..."""
        line = self.command("scontrol", "show", "job", "--oneliner", str(job_id)).stdout
        return dict(re.findall(r"(\S+?)=(\S*)", line))

    def wait(self, job_id: int, until, timeout: float = 300) -> dict[str, str]:
        """Polls the job until `until(fields)` holds; its fields then."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job(job_id)
            if until(fields):
                return fields
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {fields.get('JobState')} after {timeout} s: {fields}\n"
                                     + self.logs())
            time.sleep(0.2)

    def wait_finished(self, job_id: int, timeout: float = 300) -> dict[str, str]:
        return self.wait(job_id, lambda f: f.get("JobState") in FINISHED, timeout)

    def logs(self) -> str:
        return "".join(f"--- {path.name} (end)\n{path.read_text(errors='replace')[-3000:]}\n"
                       for path in sorted(self.root.glob("*.log")))

    def cancel_all(self) -> None:
        """Cancels every job and waits until the node has none left, so no job outlives the cluster."""
        self.command("scancel", f"--partition={PARTITION}", check=False)
        deadline = time.monotonic() + 60
        while self.command("squeue", "--noheader", "--format=%i", check=False).stdout.strip() \
                and time.monotonic() < deadline:
            time.sleep(0.5)


def _config(root: Path, node: str, cpus: int) -> str:
    return f"""\
ClusterName=coca-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket,cred_expire={CRED_EXPIRE_S}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge={MIN_JOB_AGE_S}
FirstJobId={first_job_id()}
# The scheduler otherwise looks at pending jobs once a minute (backfill: every 30 s), so a
# requeued job whose BeginTime has passed waited ~25 s more here.
SchedulerParameters=sched_interval=1
# The hardware slurmd finds (sockets, cores) need not match the CPUs given here.
SlurmdParameters=config_overrides
# The script's rendezvous host is the first node name of the allocation, so it must resolve.
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@contextmanager
def slurm_cluster() -> Iterator[Cluster]:
    """Starts munged, slurmctld and slurmd (foreground, as children of this process) and waits until
    the node is idle; cancels every job and stops them at the end."""
    # munged refuses a socket in a folder that others cannot traverse, and pytest's are 0700.
    root = Path(tempfile.mkdtemp(prefix="coca-slurm-"))
    root.chmod(0o755)
    node = _node_name()
    cpus = os.cpu_count() or 1
    for folder in ("state", "spool"):
        (root / folder).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    cluster = Cluster(root, node, cpus)
    cluster.conf.write_text(_config(root, node, cpus))

    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)

        def daemon(name: str, *args: str) -> None:
            log = stack.enter_context(open(root / f"{name}.out", "w"))
            proc = subprocess.Popen([_which(name), *args], stdout=log, stderr=subprocess.STDOUT, env=cluster.env)
            stack.callback(_stop, proc)

        daemon("munged", "--foreground", f"--socket={root}/munge.socket", f"--key-file={key}",
               f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed")
        _wait_for(lambda: (root / "munge.socket").exists(), "munged's socket", cluster)
        daemon("slurmctld", "-D", "-f", str(cluster.conf))
        daemon("slurmd", "-D", "-f", str(cluster.conf), "-N", node)
        stack.callback(cluster.cancel_all)  # runs before the daemons stop
        _wait_for(lambda: cluster.command("sinfo", "--noheader", "--Node", f"--nodes={node}", "--format=%T",
                                          check=False).stdout.strip() == "idle", f"node {node} idle", cluster)
        yield cluster


def _node_name() -> str:
    """This machine's name, as on a real cluster, where it resolves; else localhost."""
    name = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(name)
        return name
    except OSError:
        return "localhost"


def _wait_for(ready, what: str, cluster: Cluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"private SLURM: no {what} after {timeout} s\n{cluster.logs()}"
                               + "".join(p.read_text() for p in cluster.root.glob("*.out")))
        time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
