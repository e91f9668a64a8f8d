"""Hydra composition: every config group and experiment composes into the typed schema."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conf.schema import validate
from train.finetune import FinetuneConfig
from train.trainer.build import check_arch

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def compose_config(*overrides: str) -> FinetuneConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.to_object(compose("finetune", overrides=list(overrides)))


def test_default_is_the_tiny_cpu_run():
    config = compose_config()
    assert isinstance(config, FinetuneConfig)
    assert config.model.name_or_path is None and config.model.attention == "slack"
    assert config.data.source == "sample"
    assert config.deepspeed["train_micro_batch_size_per_gpu"] == config.trainer.micro_batch_size


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    # Conversions start from a parent given on the command line (init_from, or the SmolLM2 file
    # as name_or_path); any existing folder will do here.
    parent = {"conversion": [f"model.init_from={tmp_path}"], "smollm2": [f"model.name_or_path={tmp_path}"]}
    parent = parent.get(experiment.split("_")[0], [])
    config = compose_config(f"+experiment={experiment}", *parent)
    assert config.name.startswith(experiment.rsplit("_stage", 1)[0])
    assert config.deepspeed["zero_optimization"]["stage"] in (2, 3)
    validate(config)
    check_arch(config.model.arch)  # a misspelt arch key in the file would silently keep a default


def test_llama7b_recipe_and_the_papers_stages():
    recommended = compose_config("+experiment=coca_llama7b")
    assert (recommended.model.trainable, recommended.model.coca_slices, recommended.model.t_init) == \
        ("all", "low_frequency", "fit")
    stages = [compose_config(f"+experiment={name}") for name in
              ("coca_llama7b_paper", "coca_llama7b_stage2", "coca_llama7b_stage3")]
    assert [s.model.trainable for s in stages] == ["t_only", "qkv", "all"]
    assert {s.model.coca_slices for s in stages} == {"all"} and {s.model.t_init for s in stages} == {"k_proj"}
    assert compose_config("+experiment=coca_llama7b_pi32k").model.t_init == "k_proj"  # continues a CoCA checkpoint
    first = stages[0]
    assert first.data.seq_len == 2048 and first.trainer.precision == "bf16"
    assert first.deepspeed["zero_optimization"]["stage"] == 3 and first.model.gradient_checkpointing
    assert compose_config("+experiment=coca_llama7b", "data.seq_len=8192").data.seq_len == 8192


@pytest.mark.parametrize("group", ["model", "data", "deepspeed", "optim", "logger"])
def test_every_group_option_composes(group):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        overrides = [f"{group}={option}"] + (["data.path=/books"] if option == "local" else [])
        compose_config(*overrides)


def test_unknown_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="max_stesp") as error:
        compose_config("trainer.max_stesp=3")
    assert "Key 'max_stesp' not in 'TrainerConfig'" in str(error.value.__cause__)


def test_wrong_type_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="max_steps=many") as error:
        compose_config("trainer.max_steps=many")
    assert "could not be converted to Integer" in str(error.value.__cause__)
