"""LoRA (model.lora, train/lora.py): adapters train under ZeRO 1-3 and resume exactly, checkpoints
hold only what trains and name their base, init_from's model becomes the base, and an export merges
the adapters into an ordinary CoCA folder with the unmerged model's logits."""
import json
import re

import pytest
import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

from conf.errors import BadInput
from tests.runs import QUICK, checkpoint_dir, finetune, losses
from tests.test_gguf import tiny_llama
from tests.test_hub import logits, plain_transformers, remote
from train.inference.config import ExportConfig
from train.inference.export import export
from train.inference.load import checkpoint_config, resolve
from train.lora import LORA_FILE, add_adapters, read_reference
from train.model import load_pretrained
from conf.schema import LoraConfig

PRETRAINED = ["model=llama2_7b", "model.dtype=float32", "model.gradient_checkpointing=false", *QUICK,
              "logger.mode=disabled"]
LORA = ["model.lora.rank=4", "model.lora.alpha=8", "optim.lr=1e-2"]


@pytest.fixture(scope="module")
def parent(tmp_path_factory, sample_tokenizer):
    """A tiny pretrained vanilla LLaMA folder, with its tokenizer."""
    folder = tmp_path_factory.mktemp("lora-parent") / "tiny-llama"
    tiny_llama(sample_tokenizer).save_pretrained(folder)
    sample_tokenizer.save_pretrained(folder)
    return folder


def unmerged(step_folder):
    """The LoRA checkpoint as peft holds it in training: base, adapters, trained weights, no merge."""
    reference = read_reference(step_folder)
    config = checkpoint_config(resolve(str(step_folder)), None, "rope_scaling")
    base = load_pretrained(reference["base"], config=config)
    model = add_adapters(base, LoraConfig(**reference["lora"]))
    state = get_fp32_state_dict_from_zero_checkpoint(str(step_folder.parent), tag=step_folder.name)
    assert model.load_state_dict(state, strict=False).unexpected_keys == []
    return model


@pytest.mark.long
@pytest.mark.parametrize("zero", ["zero1", "zero2", "zero3"])
def test_a_lora_run_keeps_only_what_trains_and_resumes_bitwise(train_here, parent, tmp_path, zero):
    args = [*PRETRAINED, *LORA, f"model.name_or_path={parent}", f"deepspeed={zero}"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train_here(f"run_dir={whole}", *args, "trainer.max_steps=6", "trainer.save_every=6") == 0
    assert train_here(f"run_dir={split}", *args, "trainer.max_steps=4") == 0
    assert train_here(f"run_dir={split}", *args, "trainer.max_steps=6", "trainer.save_every=6") == 0
    assert losses(split) == losses(whole)
    step = checkpoint_dir(whole, 6)
    assert read_reference(step) == {"lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0,
                                             "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                                             "train_fully": ["embed_tokens", "norm"]},
                                    "base": str(parent), "init_from": None}
    saved = get_fp32_state_dict_from_zero_checkpoint(str(step.parent), tag=step.name)
    assert any(".lora_A." in name for name in saved) and any("embed_tokens" in name for name in saved)
    assert not any("base_layer" in name or "mlp." in name for name in saved)  # frozen: not saved


@pytest.mark.long
def test_a_lora_run_resumes_on_two_ranks_from_one(train_here, parent, tmp_path, env):
    """The adapters come back through DeepSpeed's universal form, though the checkpoint leaves the
    frozen weights out: the two-rank continuation follows the one-rank run (same global batch)."""
    args = [*PRETRAINED, *LORA, f"model.name_or_path={parent}", "trainer.max_steps=4", "trainer.save_every=2"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train_here(f"run_dir={whole}", *args) == 0
    assert train_here(f"run_dir={split}", *args, "trainer.max_steps=2") == 0
    code, out = finetune([f"run_dir={split}", *args, "trainer.micro_batch_size=1"], env, tmp_path, nproc=2)
    assert code == 0, out[-3000:]
    assert "loading DeepSpeed's universal form" in out
    assert losses(split) == pytest.approx(losses(whole), rel=1e-5)


@pytest.mark.long
def test_an_export_merges_the_adapters_and_gives_the_unmerged_models_logits(train_here, parent, tmp_path, env):
    run_dir = tmp_path / "run"
    assert train_here(f"run_dir={run_dir}", *PRETRAINED, *LORA, f"model.name_or_path={parent}",
                      "model.gradient_checkpointing=true", "trainer.max_steps=4") == 0
    step = checkpoint_dir(run_dir, 4)
    reference_logits = logits(unmerged(step))
    assert not torch.allclose(reference_logits, logits(load_pretrained(parent)), atol=1e-3)  # the adapters trained
    out = export(ExportConfig(checkpoint=str(run_dir), output=str(tmp_path / "export")))
    saved = json.loads((out / "config.json").read_text())
    assert saved["coca_variant"] == "slack" and not (out / LORA_FILE).exists()
    results = plain_transformers([out], tmp_path, env, {"sdpa": remote(attn_implementation="sdpa")})
    torch.testing.assert_close(results[str(out)]["sdpa"]["logits"], reference_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.long
def test_init_from_gives_the_base_that_the_adapters_adapt(train_here, parent, tmp_path):
    full = tmp_path / "full"  # a full fine-tune to CoCA: the stage LoRA continues
    assert train_here(f"run_dir={full}", *PRETRAINED, f"model.name_or_path={parent}", "trainer.max_steps=4",
                      "optim.lr=1e-2") == 0
    child = tmp_path / "child"
    # lr ~0: the adapters (B = 0 at the start) and the norms stay where they start
    assert train_here(f"run_dir={child}", *PRETRAINED, *LORA, f"model.name_or_path={parent}",
                      f"model.init_from={full}", "optim.lr=1e-12", "trainer.max_steps=2", "trainer.save_every=2") == 0
    assert read_reference(checkpoint_dir(child, 2))["init_from"] == str(checkpoint_dir(full, 4))
    merged = export(ExportConfig(checkpoint=str(child), output=str(tmp_path / "child-export")))
    stage = export(ExportConfig(checkpoint=str(full), output=str(tmp_path / "full-export")))
    stage_logits = logits(load_pretrained(stage))
    assert not torch.allclose(stage_logits, logits(load_pretrained(parent)), atol=1e-3)
    torch.testing.assert_close(logits(load_pretrained(merged)), stage_logits, atol=1e-5, rtol=0)
    # and it resumes onto the same base
    assert train_here(f"run_dir={child}", *PRETRAINED, *LORA, f"model.name_or_path={parent}",
                      "optim.lr=1e-12", "trainer.max_steps=4", "trainer.save_every=2") == 0
    assert read_reference(checkpoint_dir(child, 4))["init_from"] == str(checkpoint_dir(full, 4))


@pytest.mark.long
def test_a_resume_that_adds_drops_or_changes_lora_is_one_line_and_moves_nothing(train_here, parent, tmp_path):
    args = [*PRETRAINED, f"model.name_or_path={parent}", "trainer.max_steps=2"]
    lora_run, full_run = tmp_path / "lora", tmp_path / "full"
    assert train_here(f"run_dir={lora_run}", *args, *LORA) == 0
    assert train_here(f"run_dir={full_run}", *args) == 0
    for run_dir, change, saved in [(lora_run, [], "model.lora={'rank': 4"),
                                   (lora_run, [*LORA, "model.lora.rank=8"], "model.lora={'rank': 4"),
                                   (full_run, LORA, "no model.lora (no lora.json)")]:
        before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        with pytest.raises(BadInput, match=re.escape(saved)):
            train_here(f"run_dir={run_dir}", *args, *change, "trainer.max_steps=4")
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("override, message", [
    ("model.trainable=t_only", "model.lora with model.trainable=t_only"),
    ("model.lora.target_modules=[q_proj,v_proj]", "W_t (k_proj) must train"),
    ("model.t_init=random", "model.lora with model.t_init=random"),
    ("model.lora.rank=-1", "model.lora: rank=-1"),
])
def test_a_lora_setting_that_cannot_work_is_one_line(train_here, parent, tmp_path, override, message):
    args = [*PRETRAINED, f"model.name_or_path={parent}", "model.lora.rank=4", override]
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_here(f"run_dir={tmp_path / 'run'}", *args)
