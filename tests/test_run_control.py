"""The small decisions a run takes about itself: what counts as divergence, Ctrl-C, exit statuses,
files that survive a crash, and the DeepSpeed config it hands over."""
import os
import signal

import pytest
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler

from data import files
from tests.test_config import compose_config
from conf.errors import EXIT_BAD_INPUT, EXIT_NO_SPACE, BadInput, StopRun
from train import cli
from train.cli import exit_status, run_job
from train.trainer.divergence import LOSS_SCALE_EXHAUSTED, DivergenceWatch
from train.trainer.engine import deepspeed_config
from train.trainer.stop import StopRequest

FP16_MAX = 65504.0


def _skips_of_a_fresh_fp16_run(gradient: float, steps: int) -> list[bool]:
    """Which steps DeepSpeed's own loss scaler skips, with its defaults (2^16, hysteresis 2), for
    gradients of this magnitude: the pattern a fresh fp16 run really goes through."""
    scaler = DynamicLossScaler(init_scale=2**16, scale_window=1000, min_scale=1, delayed_shift=2,
                               consecutive_hysteresis=False)
    skipped = []
    for _ in range(steps):
        overflow = scaler.cur_scale * gradient > FP16_MAX
        scaler.update_scale(overflow)
        skipped.append(overflow)
    return skipped


def test_the_fp16_loss_scale_search_is_not_divergence_but_the_same_skips_in_bf16_are(process_group):
    skipped = _skips_of_a_fresh_fp16_run(gradient=10.0, steps=12)
    assert skipped[:5] == [True] * 5 and not any(skipped[5:])  # 2^16 (twice: hysteresis), 2^15, 2^14, 2^13
    fp16, bf16 = DivergenceWatch(3, loss_scaling=True), DivergenceWatch(3, loss_scaling=False)
    assert not any(fp16.record(2.3, applied=not skip) for skip in skipped)
    assert [bf16.record(2.3, applied=not skip) for skip in skipped][:3] == [False, False, True]
    # A loss that is not finite is bad in any precision; a good step resets the count.
    assert [fp16.record(float("nan"), applied=False) for _ in range(3)] == [False, False, True]
    fp16.record(2.3, applied=True)
    assert fp16.in_row == 0


def test_deepspeed_says_when_the_loss_scale_is_exhausted_in_the_words_the_loop_looks_for(process_group):
    with pytest.raises(Exception) as raised:
        _skips_of_a_fresh_fp16_run(gradient=float("inf"), steps=100)
    assert LOSS_SCALE_EXHAUSTED in str(raised.value)


def test_the_deepspeed_config_keeps_the_users_fp16_settings():
    config = compose_config("trainer.precision=fp16", "+deepspeed.fp16.initial_scale_power=12",
                            "+deepspeed.fp16.hysteresis=4", "+deepspeed.bf16.enabled=true")
    ds = deepspeed_config(config)
    assert ds["fp16"] == {"initial_scale_power": 12, "hysteresis": 4, "enabled": True}
    assert ds["bf16"] == {"enabled": False}  # precision decides which one is on


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGUSR1])
def test_a_preemption_signal_asks_for_a_stop(monkeypatch, stop_signal):
    """The end-to-end stop (tests/test_trainer.py) sends SIGTERM and SIGINT; SIGUSR1 takes the same handler."""
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    before = signal.getsignal(stop_signal)
    stop = StopRequest()
    try:
        os.kill(os.getpid(), stop_signal)
        assert stop.signal == stop_signal
    finally:
        stop.restore()
    assert signal.getsignal(stop_signal) is before


def test_the_first_ctrl_c_asks_for_a_stop_and_the_second_aborts(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    before = signal.getsignal(signal.SIGINT)
    stop = StopRequest()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is before


def test_under_torchrun_every_ctrl_c_only_asks_for_the_stop(monkeypatch):
    """torchrun relays the terminal's Ctrl-C, so each press reaches a worker twice."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    stop = StopRequest()
    try:
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGINT
    finally:
        stop.restore()


def test_bad_input_and_known_early_ends_get_their_status_and_other_errors_propagate(caplog, monkeypatch):
    """Only BadInput is one line and status 2; a ValueError from anywhere else is a failure whose
    traceback the user must see (Hydra's entry point then exits 1)."""
    monkeypatch.setattr(cli, "_statuses", [])
    monkeypatch.setattr(cli, "_jobs_started", [])

    def bad(_):
        raise BadInput("x=1 is not allowed")

    def broken(_):
        raise ValueError("a library's own complaint at step 5,000")

    def full(_):
        raise StopRun(EXIT_NO_SPACE, "no space to save checkpoint /c/step-00000004: ...")

    run_job("test", bad, None)
    assert exit_status() == EXIT_BAD_INPUT
    assert "bad input: x=1 is not allowed" in caplog.text
    with pytest.raises(ValueError, match="a library's own complaint"):
        run_job("test", broken, None)
    with pytest.raises(SystemExit) as ended:
        run_job("test", full, None)
    assert ended.value.code == EXIT_NO_SPACE
    assert "error: no space to save checkpoint" in caplog.text


def test_an_atomic_write_reaches_the_disk_before_it_replaces_the_old_file(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", recording_fsync)
    path = tmp_path / "trainer_state.json"
    path.write_text("old")
    files.write_atomically(path, "new")
    assert path.read_text() == "new" and not list(tmp_path.glob("*.tmp"))
    assert synced == [str(path) + ".tmp", str(tmp_path)]  # the data, then the rename in its folder
