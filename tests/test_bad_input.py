"""Bad input ends every command with status 2 and one line, from Hydra's composition too; what
the configuration's checks can see is refused before torch is imported, within a second or two."""
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from tests.runs import REPO, finetune
from tests.test_config import compose_config
from conf.errors import EXIT_BAD_INPUT

# A command as `python -m` runs it, reporting its exit status and whether torch was imported.
_RUN_COMMAND = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as stop:
    print(f"status={stop.code} torch={'torch' in sys.modules}")
"""

FINETUNE_PROBLEMS = [
    ("model.attention=strict", "model.attention='strict' is not supported; choose one of vanilla, slack, exact"),
    ("trainer.precision=fp8", "trainer.precision='fp8' is not supported; choose one of fp32, bf16, fp16"),
    ("trainer.tile_tokens=0", "trainer.tile_tokens=0 must be >= 1, or null for the model's hidden_size"),
    ("resume=/no/such/run", "resume='/no/such/run' does not exist"),
]


@pytest.mark.parametrize("command, args, messages", [
    ("train.finetune", ["trainer.max_stesp=3"],
     ["Could not override 'trainer.max_stesp'", "Key 'max_stesp' not in 'TrainerConfig'"]),
    ("train.finetune", [override for override, _ in FINETUNE_PROBLEMS],
     [f"{len(FINETUNE_PROBLEMS)} problems: (1) ", *(message for _, message in FINETUNE_PROBLEMS)]),
    ("train.evaluate", [], ["checkpoint"]),
    ("train.export", ["checkpoint=x", "output=y", "dtype=half"], ["dtype='half' is not supported"]),
    ("train.generate", ["checkpoint=x", "prompt=hi", "max_new_tokens=0"], ["max_new_tokens=0 must be >= 1"]),
], ids=["hydra-composition", "finetune-checks", "evaluate-missing-checkpoint", "export-checks", "generate-checks"])
def test_bad_input_is_one_line_and_status_2_before_torch_loads(env, tmp_path, command, args, messages):
    # Hydra ends with status 1 for a configuration it cannot compose; no job has started, so it is bad input.
    proc = subprocess.run([sys.executable, "-c", _RUN_COMMAND, command, f"hydra.run.dir={tmp_path}", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"status={EXIT_BAD_INPUT} torch=False", out
    assert "Traceback" not in out
    for message in messages:
        assert message in out, out


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


def test_a_misspelt_arch_key_in_an_experiment_file_names_the_nearest_field(env, tmp_path):
    experiment = tmp_path / "conf" / "experiment"
    experiment.mkdir(parents=True)
    (experiment / "typo.yaml").write_text("# @package _global_\nmodel:\n  arch:\n    hiden_size: 96\n")
    code, out = finetune([f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "+experiment=typo",
                          f"run_dir={tmp_path / 'run'}"], env, REPO)
    assert code == EXIT_BAD_INPUT, out
    assert "model.arch.hiden_size is not a LlamaConfig field; did you mean 'hidden_size'?" in out
