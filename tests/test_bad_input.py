"""Bad input ends every command with status 2 and one line, from Hydra's composition too."""
import time

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from tests.runs import REPO, finetune, launch
from tests.test_config import compose_config
from train.cli import EXIT_BAD_INPUT


def test_a_config_hydra_cannot_compose_is_bad_input(env, tmp_path):
    # One process for Hydra's composition path (status 1 from Hydra, turned into 2 before any job
    # starts); the other composition errors take the same path and are checked in-process below.
    started = time.time()
    code, out = finetune(["trainer.max_stesp=3"], env, tmp_path)
    assert code == EXIT_BAD_INPUT, out
    assert "Could not override 'trainer.max_stesp'" in out and "Key 'max_stesp' not in 'TrainerConfig'" in out, out
    assert time.time() - started < 60


@pytest.mark.parametrize("override, error, message", [
    ("model=nosuch", MissingConfigException, "Could not find 'model/nosuch'"),
    ("trainer.max_step=3", ConfigCompositionException, "Could not override 'trainer.max_step'"),
    ("trainer.max_steps=abc", ConfigCompositionException,
     "Value 'abc' of type 'str' could not be converted to Integer"),
])
def test_every_composition_error_names_the_bad_override(override, error, message):
    with pytest.raises(error) as raised:
        compose_config(override)
    assert message in f"{raised.value} {raised.value.__cause__}"


def test_evaluate_without_a_checkpoint_is_bad_input(env, tmp_path):
    code, out = launch("train.evaluate", [], env, tmp_path)
    assert code == EXIT_BAD_INPUT and "checkpoint" in out, out


def test_a_misspelt_arch_key_in_an_experiment_file_names_the_nearest_field(env, tmp_path):
    experiment = tmp_path / "conf" / "experiment"
    experiment.mkdir(parents=True)
    (experiment / "typo.yaml").write_text("# @package _global_\nmodel:\n  arch:\n    hiden_size: 96\n")
    code, out = finetune([f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "+experiment=typo",
                          f"run_dir={tmp_path / 'run'}"], env, REPO)
    assert code == EXIT_BAD_INPUT, out
    assert "model.arch.hiden_size is not a LlamaConfig field; did you mean 'hidden_size'?" in out
