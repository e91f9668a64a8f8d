"""`python -m train.finetune -m ...`: a Hydra sweep runs every job, each in its own run_dir."""
import json

from tests.runs import QUICK, REPO, finetune, losses
from train.cli import EXIT_BAD_INPUT


def test_sweep_runs_every_job_in_its_own_run_dir_and_wandb_run(env, tmp_path):
    sweep = tmp_path / "sweep"
    code, out = finetune(["-m", "model.attention=vanilla,exact", f"hydra.sweep.dir={sweep}", *QUICK,
                          "trainer.max_steps=3"], env, tmp_path)
    assert code == 0, out
    vanilla, exact = sweep / "0-tiny", sweep / "1-tiny"
    for run_dir, variant in ((vanilla, "vanilla"), (exact, "exact")):
        assert sorted(losses(run_dir)) == [1, 2, 3]
        final = run_dir / "checkpoints" / "step-00000003"
        assert json.loads((final / "config.json").read_text())["coca_variant"] == variant
    run_ids = {json.loads((d / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())["wandb_run_id"]
               for d in (vanilla, exact)}
    assert len(run_ids) == 2
    assert losses(vanilla) != losses(exact)

    # The same command again resumes each job from its own folder: nothing left to train.
    code, out = finetune(["-m", "model.attention=vanilla,exact", f"hydra.sweep.dir={sweep}", *QUICK,
                          "trainer.max_steps=3"], env, tmp_path)
    assert code == 0, out
    assert out.count("resumed from") == 2, out


def test_a_bad_job_does_not_stop_the_sweep_but_sets_the_status(env, tmp_path):
    sweep = tmp_path / "sweep"
    code, out = finetune(["-m", "model.attention=strict,slack", f"hydra.sweep.dir={sweep}", *QUICK,
                          "trainer.max_steps=2"], env, tmp_path)
    assert code == EXIT_BAD_INPUT, out
    assert "model.attention='strict' is not supported" in out
    assert sorted(losses(sweep / "1-tiny")) == [1, 2]
