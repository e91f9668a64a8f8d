"""Checkpoints a days-long run can always resume from: damage, rewinds, kills, a new batch size."""
import json
import random
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.runs import QUICK, REPO, finetune, losses
from conf.errors import EXIT_BAD_INPUT
from train.trainer.checkpoint.manifest import damage

# Saves at steps 4 and 8, both kept.
ARGS = [*QUICK, "logger.mode=disabled"]


@pytest.fixture
def saved(shared_run, tmp_path):
    """A copy of a finished run (checkpoints at steps 4 and 8) for one test to harm."""
    return Path(shutil.copytree(shared_run(*ARGS), tmp_path / "run", symlinks=True))


def _ckpt(run_dir, step):
    return run_dir / "checkpoints" / f"step-{step:08d}"


def _aside(run_dir, kind, step):
    return list((run_dir / "checkpoints").glob(f"{kind}-{step:08d}-*"))


@pytest.mark.parametrize("harm", ["truncated shard", "missing shard"])
def test_auto_resume_sets_a_damaged_checkpoint_aside_and_takes_the_one_before(train_here, saved, harm, caplog):
    shard = _ckpt(saved, 8) / "mp_rank_00_model_states.pt"
    if harm == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:1000])
    else:
        shard.unlink()
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={saved}", *ARGS, "trainer.max_steps=10") == 0
    out = caplog.text
    assert f"checkpoint {_ckpt(saved, 8)} is damaged ({shard} " in out
    (damaged,) = _aside(saved, "damaged", 8)
    assert (damaged / "trainer_state.json").is_file()  # set aside, never deleted
    assert f"resumed from {_ckpt(saved, 4)} at step 4" in out
    assert sorted(losses(saved))[-1] == 10 and (saved / "checkpoints" / "latest").read_text() == "step-00000010"


def test_resume_path_to_a_damaged_checkpoint_is_one_line_and_status_2(env, saved):
    shard = _ckpt(saved, 8) / "mp_rank_00_model_states.pt"
    shard.write_bytes(shard.read_bytes()[:1000])
    code, out = finetune([f"run_dir={saved}", *ARGS, f"resume={_ckpt(saved, 8)}"], env, REPO)
    assert code == EXIT_BAD_INPUT, out
    assert f"checkpoint {_ckpt(saved, 8)} is damaged ({shard} has 1000 bytes" in out
    assert "Traceback" not in out
    assert (_ckpt(saved, 8) / "trainer_state.json").is_file()  # left where it is


def test_garbage_in_latest_falls_back_to_the_newest_complete_checkpoint(train_here, saved, caplog):
    (saved / "checkpoints" / "latest").write_bytes(b"\x00\xffnot a step\n")
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={saved}", *ARGS, "trainer.max_steps=9") == 0
    assert f"resumed from {_ckpt(saved, 8)} at step 8" in caplog.text


def test_rewinding_sets_the_newer_checkpoints_aside_and_replays_the_same_steps(train_here, saved, caplog):
    original = losses(saved)
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={saved}", *ARGS, f"resume={_ckpt(saved, 4)}") == 0
    out = caplog.text
    (abandoned,) = _aside(saved, "abandoned", 8)
    assert json.loads((abandoned / "trainer_state.json").read_text())["step"] == 8
    assert f"resuming from {_ckpt(saved, 4)}, an earlier step: {_ckpt(saved, 8)} moved to {abandoned}" in out
    # metrics.jsonl forgets the abandoned steps; the replayed 5..8 are the same steps, saved afresh.
    assert losses(saved) == original
    assert "resumed from" in out and "step-00000004 at step 4" in out
    assert (saved / "checkpoints" / "latest").read_text() == "step-00000008"
    assert json.loads((_ckpt(saved, 8) / "manifest.json").read_text())["files"]


def test_resuming_with_another_global_batch_runs_across_the_epoch_end(train_here, saved, caplog):
    run_dir = saved  # resumed from its step 4 (step 8 set aside as abandoned)
    blocks = json.loads((_ckpt(run_dir, 4) / "trainer_state.json").read_text())["sampler"]["num_blocks"]
    beyond = 4 + (blocks - 8) // 3 + 5  # past the end of the first epoch with batches of 3
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={run_dir}", *ARGS, f"resume={_ckpt(run_dir, 4)}", "trainer.micro_batch_size=3",
                          f"trainer.max_steps={beyond}", f"trainer.save_every={beyond}",
                          f"trainer.eval_every={beyond}") == 0
    assert "global batch 2 -> 3 sequences: epoch 0 goes on from sample 8" in caplog.text
    state = json.loads((_ckpt(run_dir, beyond) / "trainer_state.json").read_text())
    assert state["sampler"]["epoch"] == 1 and state["sampler"]["position"] == 15


@pytest.mark.long
def test_kill_9_at_random_moments_never_leaves_a_checkpoint_that_fails(env, tmp_path):
    """A bounded torture test: kills at random moments of a run that saves every step."""
    run_dir, rng = tmp_path / "run", random.Random(0)
    args = [f"run_dir={run_dir}", *ARGS, "trainer.max_steps=12", "trainer.save_every=1", "trainer.eval_every=100"]
    for _ in range(2):
        proc = finetune(args, env, REPO, wait=False)
        deadline = time.time() + 120
        start = len(list((run_dir / "checkpoints").glob("step-*"))) if run_dir.exists() else 0
        while proc.poll() is None and time.time() < deadline:  # into the saving, then a random moment
            if run_dir.exists() and len(list((run_dir / "checkpoints").glob("step-*"))) > start:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.communicate()
        latest = (run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text())
        assert (latest / "trainer_state.json").is_file()
        assert damage(latest) is None
    code, out = finetune(args, env, REPO)
    assert code == 0, out
    assert sorted(losses(run_dir))[-1] == 12
