"""launch/: torchrun on one node and c10d rendezvous across nodes, for real (training on CPU; two
multinode.sh launches on this machine stand in for two nodes), and what of launch/slurm.sbatch a
real single-node SLURM without GPUs cannot show, simulated: srun, scontrol and scancel replaced
by recorders on PATH, for several nodes, GPU counts and hostlists, and for exit statuses a real
run cannot be made to give cheaply (the wall-time budget's 75, a crash). Everything else about
slurm.sbatch runs on a real SLURM in tests/test_launch_slurm.py."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runs import REPO, losses
from conf.errors import EXIT_PREEMPTED

LAUNCH = REPO / "launch"
SCRIPTS = [LAUNCH / "torchrun.sh", LAUNCH / "multinode.sh", LAUNCH / "slurm.sbatch", LAUNCH / "common.sh",
           *sorted((LAUNCH / "experiments").glob("*.sh"))]
SMALL = ["data.seq_len=64", "data.sample.num_books=6", "data.sample.words_per_book=3000", "logger.mode=disabled"]

FAKE_SRUN = """
worker_status = os.environ.get("FAKE_WORKER_STATUS")
if worker_status:  # what launch/worker.py leaves behind
    Path(os.environ["COCA_LAUNCH_STATUS_DIR"], "rank-0").write_text(worker_status)
sys.exit(int(os.environ.get("FAKE_SRUN_STATUS", "0")))
"""
FAKE_SCONTROL = """
args = sys.argv[1:]
if args[:2] == ["show", "hostnames"]:
    print("\\n".join(os.environ["FAKE_HOSTNAMES"].split()))
elif args[:2] == ["show", "job"]:
    print(f"JobId={args[2]} JobName=coca\\n   JobState=RUNNING Reason=None")
"""
FAKE_TORCHRUN = """
worker_status = os.environ.get("FAKE_WORKER_STATUS")
if worker_status:
    Path(os.environ["COCA_LAUNCH_STATUS_DIR"], "rank-0").write_text(worker_status)
sys.exit(int(os.environ.get("FAKE_LAUNCHER_STATUS", "0")))
"""


def write_fake(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\nfrom pathlib import Path\n"
                    f"with open(os.environ['FAKE_SLURM_LOG'], 'a') as log:\n"
                    f"    log.write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n{body}")
    path.chmod(0o755)


@pytest.fixture(scope="module")
def base_env(env):
    # No SLURM or rendezvous settings leak in from the machine; no GPU even where there is one.
    clean = {k: v for k, v in env.items() if not k.startswith(("SLURM_", "MASTER_", "NPROC"))}
    return {**clean, "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture
def fake(tmp_path):
    """A folder of recorders for srun/scontrol/scancel/torchrun; `calls()` reads what they saw.
    scancel only records: it must not reach a real SLURM from a simulated job."""
    class Fake:
        bin = tmp_path / "fakebin"
        log = tmp_path / "slurm-calls.jsonl"

        def env(self, base, with_scontrol=True, **extra):
            self.bin.mkdir(exist_ok=True)
            for name, body in [("srun", FAKE_SRUN), ("scancel", ""), ("scontrol", FAKE_SCONTROL)]:
                if name != "scontrol" or with_scontrol:
                    write_fake(self.bin, name, body)
            return {**base, "PATH": f"{self.bin}:{base['PATH']}", "FAKE_SLURM_LOG": str(self.log), **extra}

        def calls(self):
            if not self.log.exists():
                return []
            return [json.loads(line) for line in self.log.read_text().splitlines()]

    return Fake()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, env, cwd):
    # Own session: the test can end a whole launch (torchrun and its workers) if it hangs.
    return subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc, timeout=300):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out:\n{out}")
    return proc.returncode, out


def run(cmd, env, cwd, timeout=300):
    return finish(start(cmd, env, cwd), timeout)


def slurm_env(fake, base, **extra):
    return fake.env(base, **{"SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu-a[07-08]",
                             "FAKE_HOSTNAMES": "gpu-a07 gpu-a08", "SLURM_GPUS_ON_NODE": "4",
                             "SLURM_CPUS_ON_NODE": "32", **extra})


def srun_command(fake) -> tuple[list[str], list[str]]:
    (call,) = [c for c in fake.calls() if c[0] == "srun"]
    at = call.index("torchrun")
    return call[1:at], call[at:]


# --- static checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_pass_shellcheck():
    result = subprocess.run(["shellcheck", "-x", *[str(p.relative_to(REPO)) for p in SCRIPTS]],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_script_a_user_runs_is_executable():
    import os

    runnable = [p for p in SCRIPTS if p.name != "common.sh"]
    assert runnable and [p.name for p in runnable if not os.access(p, os.X_OK)] == []


def test_scripts_know_the_trainers_exit_status():
    assert f"EXIT_PREEMPTED={EXIT_PREEMPTED}\n" in (LAUNCH / "common.sh").read_text()


@pytest.mark.parametrize("rope, split", [("null", "test"), ("{rope_type:dynamic,factor:4.0}", "test"),
                                         ("{rope_type:yarn,factor:2.0,original_max_position_embeddings:8192}",
                                          "validation")])
def test_experiment_scripts_find_evaluations_where_train_evaluate_writes_them(rope, split):
    """The experiment scripts skip an evaluation whose folder exists, so their folder names must be
    train.evaluate's: step-N[-<rope>][-<split>]."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from train.evaluation.run import rope_tag

    script = f'. launch/experiments/common.sh; EVAL_SPLIT={split}; tag "$1"'
    result = subprocess.run(["bash", "-c", script, "tag", rope], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    setting = OverridesParser.create().parse_override(f"eval.rope_scaling={rope}").value()  # as Hydra reads it
    expected = "".join(f"-{part}" for part in (rope_tag(setting), None if split == "test" else split) if part)
    assert result.stdout == expected


# --- torchrun.sh and multinode.sh, their command lines ------------------------------------------

@pytest.mark.parametrize("extra,nproc", [({}, 1), ({"NPROC": "3"}, 3), ({"CUDA_VISIBLE_DEVICES": "0,1"}, 2)])
def test_torchrun_sh_starts_one_worker_per_gpu_or_nproc(base_env, fake, tmp_path, extra, nproc):
    fake.bin.mkdir()
    write_fake(fake.bin, "torchrun", FAKE_TORCHRUN)
    env = {**fake.env(base_env), **extra}
    code, out = run(["bash", LAUNCH / "torchrun.sh", "trainer.max_steps=3", "model.name_or_path=/m/llama 7b"],
                    env, tmp_path)
    assert code == 0, out
    (call,) = fake.calls()
    assert call == ["torchrun", "--standalone", f"--nproc_per_node={nproc}", str(LAUNCH / "worker.py"),
                    "trainer.max_steps=3", "model.name_or_path=/m/llama 7b"]
    assert "command: torchrun --standalone" in out and "python 3." in out


@pytest.mark.parametrize("worker_status,expected", [("75", 75), ("3", 3), ("", 1)])
def test_torchrun_sh_exits_with_the_trainers_status_not_torchruns(base_env, fake, tmp_path, worker_status,
                                                                   expected):
    fake.bin.mkdir()
    write_fake(fake.bin, "torchrun", FAKE_TORCHRUN)
    env = fake.env(base_env, FAKE_WORKER_STATUS=worker_status, FAKE_LAUNCHER_STATUS="1")  # torchrun: always 1
    code, out = run(["bash", LAUNCH / "torchrun.sh"], env, tmp_path)
    assert code == expected, out


def test_bad_nproc_and_missing_multinode_settings_fail_with_a_message(base_env, tmp_path):
    code, out = run(["bash", LAUNCH / "torchrun.sh"], {**base_env, "NPROC": "none"}, tmp_path)
    assert code == 2 and "NPROC=none" in out
    code, out = run(["bash", LAUNCH / "multinode.sh"], {**base_env, "NNODES": "2", "NODE_RANK": "0"}, tmp_path)
    assert code != 0 and "MASTER_ADDR" in out


@pytest.mark.long
def test_two_nodes_of_one_process_train_together(base_env, tmp_path):
    """Two multinode.sh launches on this machine stand in for two nodes."""
    run_dir = tmp_path / "run"
    env = {**base_env, "NNODES": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "NPROC": "1"}
    args = [f"run_dir={run_dir}", *SMALL, "trainer.max_steps=4", "trainer.save_every=2"]
    nodes = [start(["bash", LAUNCH / "multinode.sh", *args], {**env, "NODE_RANK": str(rank)}, tmp_path)
             for rank in (1, 0)]  # the non-hosting node first: it must wait for the rendezvous
    try:
        results = [finish(node) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    for code, out in results:
        assert code == 0, out
    assert "--rdzv_backend=c10d --rdzv_endpoint=127.0.0.1:" in results[1][1]
    final = run_dir / "checkpoints" / "step-00000004"
    assert {"rng-rank00000.pt", "rng-rank00001.pt", "trainer_state.json"} <= {p.name for p in final.iterdir()}
    assert json.loads((final / "trainer_state.json").read_text())["step"] == 4
    assert sorted(losses(run_dir)) == [1, 2, 3, 4]


# --- slurm.sbatch with recorders ------------------------------------------------------------

def test_sbatch_starts_one_torchrun_per_node_on_the_allocation(base_env, fake, tmp_path):
    # As SLURM runs it: a copy in a spool folder, with the project found through the submit folder.
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy(LAUNCH / "slurm.sbatch", spool / "slurm_script")
    overrides = ["+experiment=coca_llama7b", "trainer.max_steps=10", "model.name_or_path=/models/llama 7b"]
    env = slurm_env(fake, base_env, SLURM_SUBMIT_DIR=str(REPO))
    code, out = run(["bash", spool / "slurm_script", *overrides], env, tmp_path)
    assert code == 0, out
    srun_options, torchrun = srun_command(fake)
    assert {"--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=32"} <= set(srun_options)
    assert {"--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d", "--rdzv_id=4242",
            f"--rdzv_endpoint=gpu-a07:{29500 + 4242 % 1000}"} <= set(torchrun)
    assert torchrun[-4:] == [str(LAUNCH / "worker.py"), *overrides]  # passed through verbatim
    assert not any(a.startswith("run_dir=") for a in torchrun)  # the trainer derives slurm-<job id>
    assert ["scontrol", "show", "hostnames", "gpu-a[07-08]"] in fake.calls()
    assert not [c for c in fake.calls() if c[:2] == ["scontrol", "requeue"]]
    assert "slurm job 4242" in out and "torch 2." in out and "command: srun --nodes=2" in out


@pytest.mark.parametrize("slurm,nproc,head", [
    ({"SLURM_GPUS_PER_NODE": "a100:8"}, 8, "gpu-a07"),
    ({"SLURM_JOB_GPUS": "0,1", "SLURM_JOB_NODELIST": "node[003-004,010],login1"}, 2, "node003"),
    ({"SLURM_GPUS_ON_NODE": "4", "NPROC": "2", "SLURM_JOB_NODELIST": "a1,b[2-3]"}, 2, "a1"),
    ({"MASTER_ADDR": "gpu-a07-ib", "MASTER_PORT": "31000"}, 1, "gpu-a07-ib"),  # no GPU at all: one process
])
def test_sbatch_reads_gpus_and_first_node_without_scontrol(base_env, fake, tmp_path, slurm, nproc, head):
    env = slurm_env(fake, base_env, with_scontrol=False, **slurm)
    if "SLURM_GPUS_ON_NODE" not in slurm:
        del env["SLURM_GPUS_ON_NODE"]
    code, out = run(["bash", LAUNCH / "slurm.sbatch"], env, tmp_path)
    assert code == 0, out
    _, torchrun = srun_command(fake)
    assert f"--nproc_per_node={nproc}" in torchrun
    endpoint = next(a for a in torchrun if a.startswith("--rdzv_endpoint="))
    assert endpoint.split("=")[1].rsplit(":", 1)[0] == head


# Finished, signalled, cancelled and bad-input jobs run on the real cluster (test_launch_slurm.py).
@pytest.mark.parametrize("worker_status,code,requeued", [
    ("75", 0, True),    # trainer.max_wall_time_min: saved, no signal involved
    ("", 1, False),     # a crash
])
def test_sbatch_requeues_only_after_a_saved_stop(base_env, fake, tmp_path, worker_status, code, requeued):
    env = slurm_env(fake, base_env, FAKE_SRUN_STATUS="1", FAKE_WORKER_STATUS=worker_status)
    got, out = run(["bash", LAUNCH / "slurm.sbatch"], env, tmp_path)
    assert got == code, out
    assert (["scontrol", "requeue", "4242"] in fake.calls()) == requeued
