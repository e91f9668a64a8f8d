"""A .gguf file as model.name_or_path (data/gguf_model.py): a tiny LLaMA written with gguf's own writer
goes through conversion, ZeRO 1-3, resume, init_from, export, plain transformers and generation."""
import json
import shutil
from pathlib import Path

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from conf.errors import EXIT_BAD_INPUT, BadInput
from data.gguf_model import gguf_folder
from tests.runs import QUICK, REPO, checkpoint_dir, finetune, losses
from tests.test_hub import logits, plain_transformers, remote
from train.inference.config import ExportConfig, GenerateConfig
from train.inference.export import export
from train.inference.generate import generate
from train.inference.load import EXPORTED, resolve
from train.model import load_pretrained

PRETRAINED = ["model=llama2_7b", "model.dtype=float32", "model.gradient_checkpointing=false", *QUICK,
              "logger.mode=disabled"]


def _interleaved(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's layout of q/k rows (each head's rotary pairs side by side), which transformers'
    GGUF reader turns back into its half-split one."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(path: Path, model: LlamaForCausalLM, tokenizer, architecture: str = "llama") -> Path:
    """`model` and its byte-level BPE `tokenizer` as an F32 GGUF file, named as llama.cpp names them."""
    c = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    # Byte-level GGUF files carry GPT-2's end of text; transformers' reader adds it when missing.
    tokens = [*sorted(vocab, key=vocab.get), "<|endoftext|>"][:c.vocab_size]
    special = {added["content"] for added in spec["added_tokens"]} | {"<|endoftext|>"}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_add_bos_token(True)
    weights = model.state_dict()
    tensors = {"token_embd.weight": weights["model.embed_tokens.weight"], "output_norm.weight": weights["model.norm.weight"],
               "output.weight": weights["lm_head.weight"]}
    names = {"attn_norm": "input_layernorm", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    for i in range(c.num_hidden_layers):
        layer = f"model.layers.{i}."
        tensors |= {f"blk.{i}.{ours}.weight": weights[f"{layer}{theirs}.weight"] for ours, theirs in names.items()}
        tensors[f"blk.{i}.attn_q.weight"] = _interleaved(weights[f"{layer}self_attn.q_proj.weight"], c.num_attention_heads)
        tensors[f"blk.{i}.attn_k.weight"] = _interleaved(weights[f"{layer}self_attn.k_proj.weight"], c.num_key_value_heads)
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_llama(tokenizer) -> LlamaForCausalLM:
    """The sample tokenizer's vocabulary and one more token, GPT-2's end of text (write_gguf)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer) + 1, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def parent(tmp_path_factory, sample_tokenizer):
    """(a tiny pretrained LLaMA, its GGUF file)."""
    model = tiny_llama(sample_tokenizer)
    return model, write_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf", model, sample_tokenizer)


def test_a_gguf_file_reads_as_the_model_and_tokenizer_it_holds_once(parent, sample_tokenizer, tmp_path):
    model, file = parent
    folder = gguf_folder(str(file), str(tmp_path))
    loaded, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    ids = sample_tokenizer("The old house stood at the end of the lane", return_tensors="pt")["input_ids"]
    assert tokenizer("The old house stood at the end of the lane", return_tensors="pt")["input_ids"].equal(ids)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert (folder / "model.safetensors").is_file()
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert gguf_folder(str(file), str(tmp_path)) == folder and (folder / "model.safetensors").stat().st_mtime_ns == written
    edited = Path(shutil.copy(file, tmp_path / "edited.gguf"))
    with open(edited, "r+b") as f:  # another file: its own folder, keyed by content
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x3f")
    assert gguf_folder(str(edited), str(tmp_path)) != folder


@pytest.mark.parametrize("zero", ["zero1", "zero2", "zero3"])
def test_a_gguf_model_converts_to_coca_trains_and_resumes(train_here, parent, tmp_path, zero, caplog):
    _, file = parent
    run_dir = tmp_path / "run"
    args = [f"run_dir={run_dir}", *PRETRAINED, f"model.name_or_path={file}", f"deepspeed={zero}",
            f"data.cache_dir={tmp_path / 'cache'}"]
    assert train_here(*args, "trainer.max_steps=4") == 0
    with caplog.at_level("INFO"):
        assert train_here(*args, "trainer.max_steps=6", "trainer.save_every=6") == 0
    assert f"resumed from {checkpoint_dir(run_dir, 4)} at step 4" in caplog.text
    assert sorted(losses(run_dir)) == list(range(1, 7))
    saved = json.loads((checkpoint_dir(run_dir, 6) / "config.json").read_text())
    assert saved["coca_variant"] == "slack" and saved["hidden_size"] == 64
    assert f"name_or_path: {file}" in (run_dir / "config.yaml").read_text()  # the run records the file given


@pytest.fixture(scope="module")
def trained(train_here, parent, tmp_path_factory):
    _, file = parent
    run_dir = tmp_path_factory.mktemp("gguf-run") / "run"
    assert train_here(f"run_dir={run_dir}", *PRETRAINED, f"model.name_or_path={file}", "trainer.max_steps=4") == 0
    return run_dir


def test_a_stage_starts_from_a_gguf_run_and_its_export_loads_in_plain_transformers(
        train_here, parent, trained, tmp_path, env):
    _, file = parent
    child = tmp_path / "child"
    assert train_here(f"run_dir={child}", *PRETRAINED, f"model.name_or_path={file}", f"model.init_from={trained}",
                      "trainer.max_steps=2", "trainer.save_every=2") == 0
    out = export(ExportConfig(checkpoint=str(child), output=str(tmp_path / "export")))
    assert (out / "model.safetensors").is_file()
    results = plain_transformers([out], tmp_path, env, {"sdpa": remote(attn_implementation="sdpa")})
    assert results[str(out)]["sdpa"]["config_class"] == "CocaLlamaConfig"
    assert torch.equal(results[str(out)]["sdpa"]["logits"], logits(load_pretrained(out)))
    text = generate(GenerateConfig(checkpoint=str(child), prompt="The old house", max_new_tokens=6))
    assert isinstance(text, str) and text


def test_a_gguf_file_is_evaluated_and_generated_from_as_it_is(parent):
    from tests.test_evaluate import eval_config
    from train.evaluation.run import evaluate

    _, file = parent
    ckpt = resolve(str(file))
    assert ckpt.kind == EXPORTED and ckpt.name == "tiny-llama.F32"
    path = evaluate(eval_config(file, "eval.lengths=[64]", "eval.stride=64", "eval.num_docs=2", "eval.passkey.lengths=[]"))
    assert path == file.parent / "tiny-llama.F32" / "eval" / "default" / "eval.json"  # beside the file, not the cache
    assert json.loads(path.read_text())["label"] == "tiny-llama.F32 vanilla"
    assert generate(GenerateConfig(checkpoint=str(file), prompt="The old house", max_new_tokens=4))


def _truncated(file: Path, tmp_path: Path) -> Path:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return cut


def _not_gguf(file: Path, tmp_path: Path) -> Path:
    wrong = tmp_path / "notes.gguf"
    wrong.write_text("not a model")
    return wrong


def _other_architecture(file: Path, tmp_path: Path) -> Path:
    writer = gguf.GGUFWriter(str(tmp_path / "other.gguf"), "no-such-arch")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tmp_path / "other.gguf"


@pytest.mark.parametrize("make, message", [
    (_not_gguf, "is not a GGUF file"),
    (_truncated, "transformers cannot read it as a causal language model"),
    (_other_architecture, "transformers cannot read it as a causal language model"),
])
def test_a_wrong_gguf_file_is_one_line(parent, tmp_path, make, message):
    bad = make(parent[1], tmp_path)
    with pytest.raises(BadInput, match=message) as refused:
        gguf_folder(str(bad), str(tmp_path / "cache"))
    assert "\n" not in str(refused.value) and str(bad) in str(refused.value)
    assert not list((tmp_path / "cache" / "coca-longctx" / "gguf").glob("[!.]*"))  # nothing trusted was left


def test_a_wrong_gguf_file_stops_the_run_with_status_2(parent, tmp_path, env):
    bad = _truncated(parent[1], tmp_path)
    code, out = finetune([f"run_dir={tmp_path / 'run'}", *PRETRAINED, f"model.name_or_path={bad}"], env, REPO)
    assert code == EXIT_BAD_INPUT, out
    assert f"bad input: model.name_or_path='{bad}': transformers cannot read it" in out and "Traceback" not in out
