"""Bad input ends every command with status 2 and one line, from Hydra's composition too."""
import pytest

from tests.runs import REPO, finetune, launch
from train.cli import EXIT_BAD_INPUT


@pytest.mark.parametrize("override, message", [
    ("model=nosuch", "Could not find 'model/nosuch'"),
    ("trainer.max_step=3", "Could not override 'trainer.max_step'"),
    ("trainer.max_steps=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
])
def test_a_config_hydra_cannot_compose_is_bad_input(env, tmp_path, override, message):
    code, out = finetune([override], env, tmp_path)
    assert code == EXIT_BAD_INPUT and message in out, out


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
