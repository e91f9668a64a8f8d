"""`python -m train.finetune -m ...`: a Hydra sweep runs every job, each in its own run_dir."""
import json

import pytest

from tests.runs import QUICK, finetune, losses
from conf.errors import EXIT_BAD_INPUT


@pytest.mark.long
def test_sweep_runs_every_job_in_its_own_run_dir_and_wandb_run_and_a_bad_job_sets_the_status(env, tmp_path):
    # A bad job between two good ones: it does not stop the sweep, but sets the sweep's status.
    sweep = tmp_path / "sweep"
    command = ["-m", "model.attention=vanilla,strict,exact", f"hydra.sweep.dir={sweep}", *QUICK, "trainer.max_steps=3"]
    code, out = finetune(command, env, tmp_path)
    assert code == EXIT_BAD_INPUT, out
    assert out.count("model.attention='strict' is not supported") == 1, out
    vanilla, exact = sweep / "0-tiny", sweep / "2-tiny"
    assert not (sweep / "1-tiny" / "checkpoints").exists()
    for run_dir, variant in ((vanilla, "vanilla"), (exact, "exact")):
        assert sorted(losses(run_dir)) == [1, 2, 3]
        final = run_dir / "checkpoints" / "step-00000003"
        assert json.loads((final / "config.json").read_text())["coca_variant"] == variant
    run_ids = {json.loads((d / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())["wandb_run_id"]
               for d in (vanilla, exact)}
    assert len(run_ids) == 2
    assert losses(vanilla) != losses(exact)

    # The same command again resumes each good job from its own folder: nothing left to train.
    code, out = finetune(command, env, tmp_path)
    assert code == EXIT_BAD_INPUT, out
    assert out.count("resumed from") == 2, out


def test_the_exit_status_is_the_first_failed_jobs_else_0():
    """A sweep's and a single run's alike (train/cli.py); a sweep of good jobs exiting 0 as a process is
    tests/test_init_from.py's t_init sweep."""
    from train import cli

    statuses, started = list(cli._statuses), list(cli._jobs_started)
    try:
        cli._statuses[:] = [0, 0]
        assert cli.exit_status() == 0
        cli._statuses[:] = [0, EXIT_BAD_INPUT, 0]
        assert cli.exit_status() == EXIT_BAD_INPUT
    finally:
        cli._statuses[:], cli._jobs_started[:] = statuses, started
