"""The project's loaders read every export format; a vanilla export stays a plain LLaMA folder."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from conf import ModelConfig
from train.coca import CocaAttention, convert_to_coca
from train.coca_folder import SHIPPED_FILES
from train.inference.config import ExportConfig, GenerateConfig
from train.inference.export import export
from train.inference.generate import generate
from train.model import load_pretrained
from train.trainer.build import build_model, model_config

IDS = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(0))


def earlier_export(folder, tokenizer, variant):
    """A folder as exports before the coca_llama format were: model_type llama with coca_variant."""
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         initializer_range=0.2)
    model = convert_to_coca(LlamaForCausalLM(config), variant).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["model_type"] == "llama" and saved["coca_variant"] == variant
    return model


def logits(model):
    with torch.no_grad():
        return model.eval()(IDS).logits


@pytest.mark.parametrize("variant", ["slack", "exact"])
def test_earlier_exports_load_as_coca_and_re_export_to_the_new_format(variant, tmp_path, sample_tokenizer):
    old = tmp_path / "old"
    original = earlier_export(old, sample_tokenizer, variant)
    loaded = load_pretrained(old)
    assert {m.variant for m in loaded.modules() if isinstance(m, CocaAttention)} == {variant}
    assert torch.equal(logits(loaded), logits(original))
    new = export(ExportConfig(checkpoint=str(old), output=str(tmp_path / "new")))
    assert json.loads((new / "config.json").read_text())["model_type"] == "coca_llama"
    assert torch.equal(logits(load_pretrained(new)), logits(original))
    # Fine-tuning from an export (model.name_or_path) builds the plain LLaMA + CoCA the trainer saves.
    cfg = ModelConfig(name_or_path=str(new), tokenizer="sample", attention=variant)
    config = model_config(cfg, sample_tokenizer)
    assert type(config) is LlamaConfig and not hasattr(config, "auto_map")
    built = build_model(cfg, config)
    assert type(built) is LlamaForCausalLM and torch.equal(logits(built), logits(original))
    prompt = dict(prompt="The sky", max_new_tokens=5)
    assert generate(GenerateConfig(checkpoint=str(old), **prompt)) == generate(GenerateConfig(checkpoint=str(new),
                                                                                              **prompt))


def test_vanilla_export_is_a_plain_llama_folder(tmp_path, sample_tokenizer):
    original = earlier_export(tmp_path / "old", sample_tokenizer, "vanilla")
    out = export(ExportConfig(checkpoint=str(tmp_path / "old"), output=str(tmp_path / "new")))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert "auto_map" not in config and not any((out / name).exists() for name in SHIPPED_FILES)
    plain = AutoModelForCausalLM.from_pretrained(out)  # no trust_remote_code: any LLaMA tool reads it
    assert type(plain) is LlamaForCausalLM
    assert torch.equal(logits(plain), logits(original))
    assert "- attention: **vanilla**" in (out / "README.md").read_text()
