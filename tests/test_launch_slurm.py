"""launch/slurm.sbatch on a real SLURM: every test here submits it with sbatch to a private
single-node cluster (tests/slurm_cluster.py: the machine's slurm-wlm and munge, run as root) and
trains for real on CPU. Nothing is simulated. What one node without GPUs cannot show (several
nodes, GPU counts, hostlists) and exit statuses a real run cannot be made to give cheaply stay in
tests/test_launch.py, with recorders in place of SLURM's commands. Skipped where slurm-wlm/munge
are not installed or not running as root; .ci/run installs them."""
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.runs import REPO, losses
from tests.slurm_cluster import Cluster, slurm_cluster, unavailable
from tests.test_launch import SMALL

# A SIGTERM sent at the first checkpoint (step 4) lands well before the end, even on a busy machine.
LONG = [*SMALL, "trainer.max_steps=200", "trainer.save_every=4", "trainer.eval_every=100", "trainer.eval_batches=2"]


@pytest.fixture(scope="module")
def cluster():
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with slurm_cluster() as running:
        yield running


@pytest.fixture(scope="module")
def job_env(env):
    """The shell of a user with the project's environment active: sbatch exports it to the job."""
    clean = {k: v for k, v in env.items() if not k.startswith(("SLURM_", "MASTER_", "NPROC"))}
    return {**clean, "CUDA_VISIBLE_DEVICES": ""}


class Job:
    """One submission of launch/slurm.sbatch from the repository root, as the README says, with the
    job's working folder (--chdir) in tmp_path: its default run_dir and its log land there."""

    def __init__(self, cluster: Cluster, job_env: dict[str, str], workdir: Path, overrides: list[str],
                 submit_dir: Path = REPO):
        self.cluster = cluster
        # --time: longer than the script's --signal lead (300 s), which would otherwise come at once.
        self.id = cluster.sbatch(["--nodes=1", "--gpus-per-node=0", f"--cpus-per-task={cluster.cpus}", "--time=10",
                                  f"--chdir={workdir}", str(REPO / "launch" / "slurm.sbatch"), *overrides],
                                 job_env, submit_dir)
        self.run_dir = workdir / "outputs" / "tiny" / f"slurm-{self.id}"
        self.log_file = workdir / f"coca-{self.id}.out"  # the script's own --output=%x-%j.out

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def outcome(self, fields: dict[str, str]) -> tuple[str, str, str]:
        return fields["JobState"], fields["ExitCode"], fields["Restarts"]

    def wait_for_checkpoint(self, timeout: float = 300) -> None:
        """Until the trainer has saved once: it is in its loop, with its signal handlers set."""
        deadline = time.monotonic() + timeout
        while not list(self.run_dir.glob("checkpoints/step-*/trainer_state.json")):
            state = self.cluster.job(self.id).get("JobState")
            assert state in {"PENDING", "RUNNING"} and time.monotonic() < deadline, f"{state}\n{self.log()}"
            time.sleep(0.05)

    def scancel(self, *args: str) -> None:
        self.cluster.command("scancel", *args, str(self.id))


@pytest.fixture
def submit(cluster, job_env, tmp_path):
    return lambda overrides: Job(cluster, job_env, tmp_path, overrides)


def test_a_job_trains_to_the_end_in_its_job_id_run_dir(submit):
    job = submit(SMALL)
    fields = job.cluster.wait_finished(job.id)
    log = job.log()
    assert job.outcome(fields) == ("COMPLETED", "0:0", "0"), log
    assert sorted(losses(job.run_dir)) == list(range(1, 31)), log  # the tiny default: 30 steps
    assert (job.run_dir / "checkpoints" / "latest").read_text().strip() == "step-00000030"
    assert f"slurm job {job.id} restart 0" in log and "trainer exited 0" in log
    assert "command: srun --nodes=1 --ntasks=1" in log and "--nproc_per_node=1" in log


@pytest.mark.long
def test_a_stop_signal_saves_requeues_and_the_same_job_resumes_where_it_stopped(submit, env, tmp_path):
    job = submit(LONG)
    job.wait_for_checkpoint()
    # What SLURM does at --signal=B:TERM@<lead> before the time limit: SIGTERM to the batch script
    # alone. Sent by hand here, at a known step: slurmctld looks at time limits only every 30 s
    # or so (and its docs allow the signal up to 60 s early), so a real --signal would land anywhere
    # in the job's first half minute: before the trainer has started, or after a short run has ended.
    job.scancel("--signal=TERM", "--batch")
    job.cluster.wait(job.id, lambda f: f.get("Restarts") == "1", timeout=120)
    # The uninterrupted run, while the requeued job waits for its BeginTime and trains again.
    straight = subprocess.Popen([sys.executable, "-m", "train.finetune", f"run_dir={tmp_path / 'straight'}", *LONG],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    fields = job.cluster.wait_finished(job.id)
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out
    log = job.log()  # both runs of the job, one id: the script appends (--open-mode=append)
    assert job.outcome(fields) == ("COMPLETED", "0:0", "1"), log
    first, again = log.split(f"slurm job {job.id} restart 1", 1)
    assert "trainer exited 75" in first and f"requeued job {job.id}" in first, log
    resumed = re.search(rf"resumed from {re.escape(str(job.run_dir))}/checkpoints/step-(\d+)", again)
    assert resumed and 4 <= int(resumed[1]) < 200, log
    assert "trainer exited 0" in again and "requeued" not in again, log
    assert losses(job.run_dir) == losses(tmp_path / "straight")  # bitwise, step for step


def test_scancel_ends_the_job_for_good(submit):
    job = submit(LONG)
    job.wait_for_checkpoint()
    job.scancel()
    fields = job.cluster.wait_finished(job.id)
    log = job.log()
    # A `scontrol requeue` would show in Restarts at once, even on a job that then ends CANCELLED.
    assert (fields["JobState"], fields["Restarts"]) == ("CANCELLED", "0"), log
    assert f"job {job.id} is COMPLETING: not requeueing it" in log and "requeued job" not in log, log


def test_a_failing_trainer_fails_the_job_with_its_status_and_no_requeue(submit):
    job = submit([*SMALL, "trainer.max_steps=abc"])  # bad input: the trainer exits 2
    fields = job.cluster.wait_finished(job.id)
    log = job.log()
    assert job.outcome(fields) == ("FAILED", "2:0", "0"), log
    assert "trainer exited 2" in log and "requeued" not in log, log


def test_a_job_submitted_outside_the_repository_fails_saying_where_to_submit_from(cluster, job_env, tmp_path):
    # SLURM runs a copy of the script from its spool folder: only the submit folder leads to launch/.
    job = Job(cluster, job_env, tmp_path, [], submit_dir=tmp_path)
    fields = cluster.wait_finished(job.id)
    log = job.log()
    assert job.outcome(fields) == ("FAILED", "2:0", "0"), log
    assert "submit from the repository root" in log
