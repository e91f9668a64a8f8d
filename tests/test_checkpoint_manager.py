"""One owner of a run_dir's checkpoints (train/trainer/checkpoint/manager.py): one idea of `latest`,
earlier runs set aside rather than resumed, rank 0's decisions followed by every rank, pruning that
neither fails silently nor holds the others, saves that reach the disk before their mark."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conf.errors import EXIT_BAD_INPUT, BadInput
from tests.runs import QUICK, REPO, checkpoint_dir, launch, losses
from train.trainer.checkpoint import folders, universal
from train.trainer.distributed import check_deepspeed

ARGS = [*QUICK, "logger.mode=disabled"]  # saves at steps 4 and 8


@pytest.fixture
def run_copy(shared_run, tmp_path):
    """A copy of a finished run with checkpoints at steps 4 and 8, for one test to change."""
    return Path(shutil.copytree(shared_run(*ARGS), tmp_path / "run", symlinks=True))


def faulty(fault: str, args: list[str], env, nproc: int = 1) -> tuple[int, str]:
    """`python -m train.finetune args` with tests/faults.py's `fault` injected."""
    return launch("tests.faults", [fault, *args], env, REPO, nproc=nproc)


def test_resume_none_sets_the_earlier_run_aside_and_auto_then_continues_the_new_one(train_here, run_copy, caplog):
    """The sequence that used to resume the old run's step 8 under the new run's metrics."""
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={run_copy}", *ARGS, "resume=none", "trainer.max_steps=2",
                          "trainer.save_every=2") == 0
    (earlier,) = run_copy.glob("earlier-run-*")
    assert re.search(rf"resume=none: run_dir={run_copy} held an earlier run \(checkpoints to step 8\); this run does "
                     rf"not continue it, so it was moved to {earlier}, nothing deleted", caplog.text), caplog.text
    assert sorted(p.name for p in (earlier / "checkpoints").glob("step-*")) == ["step-00000004", "step-00000008"]
    assert sorted(losses(earlier)) == list(range(1, 9))  # the old metrics kept whole, beside its checkpoints
    assert sorted(losses(run_copy)) == [1, 2]
    caplog.clear()
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={run_copy}", *ARGS, "trainer.max_steps=3", "trainer.save_every=3") == 0
    assert f"resumed from {checkpoint_dir(run_copy, 2)} at step 2" in caplog.text
    assert sorted(losses(run_copy)) == [1, 2, 3]


def test_resuming_from_another_run_sets_this_run_dirs_own_run_aside(train_here, run_copy, shared_run, tmp_path):
    other = Path(shutil.copytree(shared_run(*ARGS), tmp_path / "other", symlinks=True))
    assert train_here(f"run_dir={run_copy}", *ARGS, f"resume={checkpoint_dir(other, 4)}", "trainer.max_steps=6",
                      "trainer.save_every=6") == 0
    (earlier,) = run_copy.glob("earlier-run-*")
    assert (earlier / "checkpoints" / "step-00000008").is_dir()
    assert sorted(p.name for p in (run_copy / "checkpoints").glob("step-*")) == ["step-00000006"]


def test_auto_resume_follows_latest_and_sets_a_newer_branch_aside(train_here, run_copy, caplog):
    """`latest` names step 4 while a complete step 8 lies beside it (a run_dir from before this
    rule): resume=auto, pruning and evaluation all take step 4, and step 8 moves aside."""
    (run_copy / "checkpoints" / "latest").write_text("step-00000004")
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={run_copy}", *ARGS, "trainer.max_steps=6", "trainer.save_every=6",
                          "trainer.keep_last=1") == 0
    assert f"resumed from {checkpoint_dir(run_copy, 4)} at step 4" in caplog.text
    (abandoned,) = (run_copy / "checkpoints").glob("abandoned-00000008-*")
    assert json.loads((abandoned / "trainer_state.json").read_text())["step"] == 8
    assert sorted(p.name for p in (run_copy / "checkpoints").glob("step-*")) == ["step-00000006"]


def test_a_failed_prune_is_logged_and_tried_again_after_the_next_save(train_here, run_copy, monkeypatch, caplog):
    real_rmtree, failed = shutil.rmtree, []

    def rmtree_failing_once(path, *args, **kwargs):
        if not failed:
            failed.append(path)
            raise PermissionError(13, "Permission denied", str(path))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(folders.shutil, "rmtree", rmtree_failing_once)
    with caplog.at_level("WARNING"):
        assert train_here(f"run_dir={run_copy}", *ARGS, "trainer.max_steps=10", "trainer.save_every=1",
                          "trainer.keep_last=1") == 0
    assert re.search(r"could not remove \S+pruning-step-00000004 \(\[Errno 13\] Permission denied.*the disk may fill",
                     caplog.text), caplog.text
    left = sorted(p.name for p in (run_copy / "checkpoints").iterdir() if p.is_dir())
    assert left == ["step-00000010"], left  # the failed one went with the next save


def test_a_folder_being_pruned_is_never_taken_for_a_checkpoint(run_copy):
    """A prune killed half-way leaves `pruning-step-N`, which neither resume nor evaluation reads."""
    root = run_copy / "checkpoints"
    doomed = folders.start_removal(root / "step-00000008")
    assert doomed.name == "pruning-step-00000008" and doomed.is_dir()
    assert folders.latest_checkpoint(root) == root / "step-00000004"
    assert doomed in folders.to_prune(root, keep_last=2, keep=root / "step-00000004")


def test_a_save_reaches_the_disk_before_its_completion_mark(train_here, tmp_path, monkeypatch):
    """Every file of a checkpoint is fsynced before trainer_state.json, the mark resume trusts, is
    renamed into place; the mark and `latest` are written atomically (fsynced, then renamed)."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", str(dst)))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    run_dir = tmp_path / "run"
    assert train_here(f"run_dir={run_dir}", *ARGS, "trainer.max_steps=4") == 0
    folder = checkpoint_dir(run_dir, 4)
    mark = events.index(("replace", str(folder / "trainer_state.json")))
    synced_before = {path for kind, path in events[:mark] if kind == "fsync"}
    shards = [str(p) for p in folder.rglob("*.pt")]
    assert shards and all(shard in synced_before for shard in shards), (shards, synced_before)
    assert ("fsync", str(folder / "trainer_state.json.tmp")) in events[:mark]
    latest = events.index(("replace", str(run_dir / "checkpoints" / "latest")))
    assert latest > mark and ("fsync", str(run_dir / "checkpoints" / "latest.tmp")) in events[mark:latest]


def test_two_conversions_of_one_parent_at_once_both_get_a_whole_universal_form(tmp_path, monkeypatch):
    """Two stages starting from one parent: neither deletes the other's output."""
    parent = tmp_path / "step-00000008"
    parent.mkdir()

    def slow_convert(folder, output):
        output.mkdir()
        time.sleep(0.3)  # both are converting at once
        (output / "done").write_text(threading.current_thread().name)

    monkeypatch.setattr(universal, "convert", slow_convert)
    results = {}
    threads = [threading.Thread(target=lambda n=n: results.update({n: universal._converted(parent)}), name=f"stage{n}")
               for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {1: parent / "universal", 2: parent / "universal"}
    assert (parent / "universal" / "done").read_text() in ("stage1", "stage2")
    assert sorted(p.name for p in parent.iterdir()) == ["universal"]  # no scratch folder left


def test_deepspeed_outside_the_tested_range_is_refused_in_one_line():
    import deepspeed

    check_deepspeed(deepspeed.__version__)
    with pytest.raises(BadInput, match=r"^DeepSpeed 0\.16\.4 is installed; this trainer supports "
                                       r"deepspeed>=0\.19\.8,<0\.20 .*pip install 'deepspeed>=0\.19\.8,<0\.20'$"):
        check_deepspeed("0.16.4")


def test_tokens_per_second_leave_out_validation_and_saves(monkeypatch):
    from train.trainer import loop

    now = [100.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: now[0])
    window = loop._Window()
    window.steps, now[0] = 4, 102.0  # 4 steps of 100 tokens in 2 s
    with window.paused():
        now[0] = 110.0  # an 8-second save
    assert window.tokens_per_s(100) == pytest.approx(200.0)
    window.reset()
    window.steps, now[0] = 1, 111.0
    assert window.tokens_per_s(100) == pytest.approx(100.0)


# ------------------------------------------------------------------ processes, faults of a cluster


def test_an_error_inside_the_training_loop_is_a_failure_with_its_traceback(env, tmp_path):
    """Only bad input is one line and status 2: a ValueError at step 3 is not the user's doing."""
    code, out = faulty("value_error_at_step:3", [f"run_dir={tmp_path / 'run'}", *ARGS], env)
    assert code not in (0, EXIT_BAD_INPUT), out
    assert "Traceback" in out and "ValueError: an error inside the training loop at step 3" in out, out


@pytest.mark.long
def test_every_rank_loads_rank_0s_choice_even_where_its_view_of_the_folder_differs(env, run_copy):
    """Rank 1 does not see step 8's completion mark (a stale NFS cache); both ranks still resume
    from step 8, the checkpoint rank 0 chose (converted to the universal form for two ranks)."""
    code, out = faulty("stale_view_on_rank_1:step-00000008", [f"run_dir={run_copy}", *ARGS, "trainer.max_steps=9",
                                                                "trainer.save_every=9"], env, nproc=2)
    assert code == 0, out
    assert out.count(f"resumed from {checkpoint_dir(run_copy, 8)} at step 8") == 2, out
    assert "step-00000004 at step 4" not in out
    assert sorted(losses(run_copy)) == list(range(1, 10))


def ranks_on_their_own(fault: str, args: list[str], env) -> list[tuple[int, str]]:
    """Two ranks as two separate processes with no torchrun agent over them, as on two nodes: no
    agent stops rank 1 when rank 0 fails, so rank 1 must end by itself. (status, output) each."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.faults", fault, *args], cwd=REPO, text=True,
                              env={**env, "RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2",
                                   "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for rank in (0, 1)]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    return [(proc.returncode, out) for proc, out in zip(procs, outputs)]


@pytest.mark.long
def test_a_filesystem_without_flock_is_one_line_on_every_rank(env, tmp_path):
    """Rank 0's flock fails as on Lustre without -o flock; rank 1 must not wait in a broadcast."""
    run_dir = tmp_path / "run"
    for code, out in ranks_on_their_own("no_flock_on_rank_0", [f"run_dir={run_dir}", *ARGS,
                                                                "trainer.collective_timeout_min=0.5"], env):
        assert code == EXIT_BAD_INPUT, out
        assert re.search(rf"bad input: run_dir={run_dir} is on a \S+ filesystem \(mounted at \S+\) without file "
                         r"locks \(flock: No locks available\): remount it with locking", out), out
        assert "Traceback" not in out


@pytest.mark.long
def test_a_conversion_that_fails_on_rank_0_stops_every_rank_at_once(env, run_copy):
    """Resuming a one-rank run on two ranks needs the universal form; rank 0's conversion fails.
    Rank 1 hears of it at once, not after the 24-hour wait such a conversion may take."""
    started = time.monotonic()
    (code0, out0), (code1, out1) = ranks_on_their_own(
        "conversion_fails_on_rank_0", [f"run_dir={run_copy}", *ARGS, "trainer.max_steps=9"], env)
    assert code0 == 1 and "CalledProcessError" in out0 and "Traceback" in out0, out0
    assert code1 == 1 and "rank 0 failed, so this rank stops too: CalledProcessError" in out1, out1
    assert time.monotonic() - started < 240
    assert not list(checkpoint_dir(run_copy, 8).glob("universal*"))


@pytest.mark.long
def test_a_data_build_longer_than_the_collective_timeout_does_not_time_out(env, tmp_path):
    """Two ranks; rank 0 builds the data 10 s longer than the collectives' 3-second timeout while
    rank 1 waits: the wait must not be one of those collectives."""
    args = [f"run_dir={tmp_path / 'run'}", *ARGS, f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_steps=2",
            "trainer.collective_timeout_min=0.05"]
    code, out = faulty("slow_data_on_rank_0:10", args, env, nproc=2)
    assert code == 0, out
    assert "waiting for the first rank of this node to tokenize and pack the data" in out
    waited = float(re.search(r"the data was ready after ([\d.]+) s of waiting", out)[1])
    assert waited >= 10, out
