"""What a resume may not do: change what a checkpoint means, share a run_dir, trip on a cut-off log
line, or leave half a checkpoint behind on a full disk. In-process runs (tests/conftest.py
`train_here`) on copies of one finished run; the exit statuses are tests/test_trainer.py's."""
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.runs import QUICK, REPO, checkpoint_dir, finetune, losses
from conf.errors import EXIT_NO_SPACE, StopRun

ARGS = [*QUICK, "logger.mode=disabled"]  # saves at steps 4 and 8


@pytest.fixture
def finished(shared_run):
    """A slack run to step 8, with checkpoints at steps 4 and 8 (read only: tests copy it)."""
    return shared_run(*ARGS)


@pytest.fixture
def run_copy(finished, tmp_path):
    return Path(shutil.copytree(finished, tmp_path / "run", symlinks=True))


@pytest.fixture
def no_engine(monkeypatch):
    """A refusal must come before the DeepSpeed engine is built: building one fails the test."""
    import deepspeed

    def refuse(*args, **kwargs):
        raise AssertionError("the engine was built before the refusal")

    monkeypatch.setattr(deepspeed, "initialize", refuse)


def _other_tokenizer(tmp_path, sample_tokenizer) -> Path:
    """The sample tokenizer with two tokens' ids swapped: same size, other meaning."""
    folder = tmp_path / "other-tokenizer"
    sample_tokenizer.save_pretrained(folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    return folder


@pytest.mark.parametrize("change, key", [
    ("model.attention=vanilla", "model.attention was slack there, this run has vanilla"),
    ("model.attention=exact", "model.attention was slack there, this run has exact"),
    ("data.seq_len=32", "data.seq_len was 64 there, this run has 32"),
    ("tokenizer", "model.tokenizer was fingerprint "),
    ("data.sample.seed=7", "the training data (data.*) was fingerprint "),
])
def test_a_resume_that_changes_what_the_checkpoint_means_is_refused_before_anything_moves(
        train_here, run_copy, tmp_path, sample_tokenizer, no_engine, change, key):
    if change == "tokenizer":
        change = f"model.tokenizer={_other_tokenizer(tmp_path, sample_tokenizer)}"
    before = sorted(p.name for p in (run_copy / "checkpoints").iterdir())
    # A rewind to step 4: a resume that went ahead would set step 8 aside first.
    with pytest.raises(ValueError) as refused:
        train_here(f"run_dir={run_copy}", *ARGS, f"resume={checkpoint_dir(run_copy, 4)}", change)
    message = str(refused.value)
    assert message.startswith(f"cannot resume from {checkpoint_dir(run_copy, 4)}: {key}"), message
    assert f"model.init_from={checkpoint_dir(run_copy, 4)} and a new run_dir" in message and "\n" not in message
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == before


def test_a_checkpoint_from_before_identity_files_is_still_checked(train_here, run_copy, no_engine):
    for step in (4, 8):
        (checkpoint_dir(run_copy, step) / "identity.json").unlink()
        manifest = checkpoint_dir(run_copy, step) / "manifest.json"
        files = json.loads(manifest.read_text())["files"]
        files.pop("identity.json")
        manifest.write_text(json.dumps({"files": files}))
    with pytest.raises(ValueError, match="model.attention was slack there, this run has vanilla"):
        train_here(f"run_dir={run_copy}", *ARGS, "model.attention=vanilla")


def test_a_coca_parent_cannot_start_a_vanilla_stage(train_here, finished, tmp_path, no_engine):
    with pytest.raises(ValueError, match=re.escape("is a CoCA model (model.attention=slack): its k_proj holds W_t")):
        train_here(f"run_dir={tmp_path / 'child'}", *ARGS, "model.attention=vanilla", f"model.init_from={finished}")


def test_a_new_stage_may_change_the_length_and_the_data_but_not_the_tokenizer(
        train_here, finished, tmp_path, sample_tokenizer):
    assert train_here(f"run_dir={tmp_path / 'longer'}", *ARGS, "trainer.max_steps=1", "data.seq_len=128",
                      "data.sample.seed=7", f"model.init_from={finished}") == 0
    with pytest.raises(ValueError, match="model.tokenizer was fingerprint .* its embeddings index other tokens"):
        train_here(f"run_dir={tmp_path / 'other'}", *ARGS,
                   f"model.tokenizer={_other_tokenizer(tmp_path, sample_tokenizer)}", f"model.init_from={finished}")


def test_one_run_per_run_dir_and_a_kill_9_frees_it(env, train_here, run_copy):
    """A second run on a run_dir that a training run holds is refused, naming the holder; once the
    holder is killed with -9 (no chance to clean up), the run_dir is free again."""
    holder = finetune([f"run_dir={run_copy}", *ARGS, "trainer.max_steps=100000", "trainer.save_every=100000"],
                      env, REPO, wait=False)
    try:
        deadline = time.time() + 120
        while len(losses(run_copy)) <= 8 and holder.poll() is None and time.time() < deadline:
            time.sleep(0.1)  # until it trains past the copied steps
        assert holder.poll() is None, holder.communicate()[0]
        with pytest.raises(ValueError) as refused:
            train_here(f"run_dir={run_copy}", *ARGS, "trainer.max_steps=10")
        assert re.search(rf"run_dir={run_copy} is in use by another run \(pid {holder.pid} on \S+, since "
                         r"\d{4}-\d\d-\d\dT", str(refused.value)), refused.value
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    assert train_here(f"run_dir={run_copy}", *ARGS, "trainer.max_steps=10") == 0  # the kernel released the lock
    assert sorted(losses(run_copy))[-1] == 10


def test_a_metrics_line_cut_short_at_the_end_is_dropped_elsewhere_refused(train_here, run_copy, caplog):
    metrics = run_copy / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole + '{"step": 9, "loss": 2.7')  # a kill mid-write
    with caplog.at_level("WARNING"):
        assert train_here(f"run_dir={run_copy}", *ARGS, "trainer.max_steps=9") == 0
    assert "its last line was cut short" in caplog.text
    assert sorted(losses(run_copy)) == list(range(1, 10))
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[:2] + ["{garbage"] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{metrics}, line 3, is not JSON")):
        train_here(f"run_dir={run_copy}", *ARGS, "trainer.max_steps=10")


def _small_disk(folder: Path, size: str) -> Path:
    folder.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr.decode().strip()}")
    return folder


# A checkpoint of the tiny model takes about 2.5 MiB: 1 MiB fills up during the first save,
# 3 MiB holds one checkpoint, and the second save is refused before it writes anything.
@pytest.mark.parametrize("size, when", [("1m", "during the save"), ("3m", "before the save")])
def test_a_full_disk_stops_the_run_in_one_line_and_leaves_only_complete_checkpoints(train_here, tmp_path, size, when):
    disk = _small_disk(tmp_path / "small-disk", size)
    try:
        run_dir = disk / "run"
        with pytest.raises(StopRun) as stopped:
            train_here(f"run_dir={run_dir}", *ARGS, "trainer.save_every=1", "trainer.keep_last=5")
        assert stopped.value.status == EXIT_NO_SPACE
        message = str(stopped.value)
        needs = "at least" if when == "during the save" else "about"
        assert re.match(rf"no space to save checkpoint {run_dir}/checkpoints/step-\d{{8}}: [\d.]+ MiB free there, and "
                        rf"the checkpoint needs {needs} [\d.]+ MiB", message), message
        assert "\n" not in message and "run the same command to resume" in message
        checkpoints = run_dir / "checkpoints"
        saved = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("step-"))
        assert all((checkpoints / name / "trainer_state.json").is_file() for name in saved)  # no partial one
        if when == "during the save":
            assert not saved and "no checkpoint was saved yet" in message
            return
        assert saved == ["step-00000001"] and (checkpoints / "latest").read_text() == saved[-1]
        # Moved to a disk with room, the run resumes from its last complete checkpoint.
        moved = Path(shutil.copytree(run_dir, tmp_path / "roomy"))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert train_here(f"run_dir={moved}", *ARGS, "trainer.max_steps=8") == 0
    assert sorted(losses(moved))[-1] == 8
