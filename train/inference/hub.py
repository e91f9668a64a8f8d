"""Sharing an export: its model card (README.md) and the upload to the Hugging Face Hub.

The card is written into every export, so what `push_to_hub` uploads is exactly the folder:
`files_to_upload` lists it, `upload` sends that list and nothing else.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from train.coca import CONFIG_KEY
from train.evaluation.report import TABLE_FILE
from train.inference.config import check_repo_id
from train.inference.load import DEEPSPEED, Checkpoint

CARD_FILE = "README.md"


def files_to_upload(folder: Path) -> list[str]:
    """Every file of the export, relative to it, in a fixed order."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def upload(folder: Path, repo_id: str) -> str:
    """Create the model repo if needed and upload the export's files; returns the commit's URL."""
    check_repo_id(repo_id)
    from huggingface_hub import HfApi  # the client only where it is used: the network starts here

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             allow_patterns=files_to_upload(folder),
                             commit_message=f"Upload {folder.name} exported by coca-longctx")
    return str(info)


def write_card(folder: Path, ckpt: Checkpoint, repo: str) -> Path:
    """The card of the export in `folder` (maybe a scratch name); `repo` is what users load it as."""
    config = json.loads((folder / "config.json").read_text())
    path = folder / CARD_FILE
    path.write_text(model_card(config, training_facts(ckpt), evaluation_tables(ckpt), repo))
    return path


def training_facts(ckpt: Checkpoint) -> dict[str, Any]:
    """What the run's own records say: sequence length, step, tokens, starting model."""
    if ckpt.kind != DEEPSPEED:
        return {}
    facts: dict[str, Any] = {"step": ckpt.step}
    state = json.loads((ckpt.folder / "trainer_state.json").read_text())
    facts["tokens_seen"] = state.get("tokens_seen")
    run_config = ckpt.folder / "config.yaml"
    if run_config.is_file():
        resolved = yaml.safe_load(run_config.read_text()) or {}
        facts["seq_len"] = (resolved.get("data") or {}).get("seq_len")
        facts["base"] = (resolved.get("model") or {}).get("name_or_path")
    return facts


def evaluation_tables(ckpt: Checkpoint) -> list[tuple[str, str]]:
    """(folder name, eval.md) for every evaluation train.evaluate wrote of this checkpoint."""
    if ckpt.kind == DEEPSPEED:
        root, names = ckpt.run_dir / "eval", (ckpt.folder.name, f"{ckpt.folder.name}-*")
    else:
        root, names = ckpt.folder / "eval", ("*",)
    found = sorted({p for name in names for p in root.glob(f"{name}/{TABLE_FILE}")})
    return [(p.parent.name, p.read_text()) for p in found]


def model_card(config: dict[str, Any], facts: dict[str, Any], tables: list[tuple[str, str]], repo: str) -> str:
    variant = config.get(CONFIG_KEY) or "vanilla"
    coca = variant != "vanilla"
    rope = config.get("rope_parameters") or {"rope_type": "default"}
    seq_len = facts.get("seq_len")
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [" + ", ".join(["llama", "long-context"] + (["coca", "custom_code"] if coca else [])) + "]",
             "---", "", f"# {Path(repo).name}", "",
             "A LLaMA-family model fine-tuned with coca-longctx"
             + (", with CoCA (Collinear Constrained Attention)." if coca else ", with vanilla RoPE attention."), "",
             f"- attention: **{variant}**" + (" CoCA; W_t is stored under the name `k_proj`" if coca else ""),
             f"- training length: {f'{seq_len} tokens per sequence' if seq_len else 'not recorded'}"
             + (f", step {facts['step']}, {facts['tokens_seen']:,} tokens seen" if facts.get("step") else ""),
             f"- started from: `{facts['base'] or 'random initialisation'}`" if "base" in facts else None,
             f"- RoPE: {rope.get('rope_type')} (theta {rope.get('rope_theta')}), "
             f"max_position_embeddings {config.get('max_position_embeddings')}",
             f"- weights: {config.get('dtype', 'float32')}", "", "## How to load", "", "```python",
             "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
             f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
             f'model = AutoModelForCausalLM.from_pretrained("{repo}"' + (", trust_remote_code=True)" if coca else ")"),
             "```", ""]
    if coca:
        lines += ["`trust_remote_code=True` runs the three Python files beside the weights (`coca.py`, "
                  "`configuration_coca_llama.py`, `modeling_coca_llama.py`; torch and transformers only): read "
                  "them first. Without it, transformers refuses the folder (its model_type `coca_llama` is "
                  "unknown to it) rather than run it as a vanilla LLaMA. RoPE scaling applies at load time, e.g. "
                  "`rope_parameters={\"rope_type\": \"dynamic\", \"factor\": 4.0, \"rope_theta\": ...}`.", "",
                  "Other engines (vLLM, llama.cpp) do not implement CoCA attention: they have not been tested "
                  "with this model, and would at best run it as a vanilla LLaMA, which gives wrong outputs.", ""]
    lines += ["## Evaluation", ""]
    if not tables:
        lines += ["No evaluation was recorded for this checkpoint (`python -m train.evaluate`).", ""]
    for name, table in tables:  # eval.md's headings, two levels down under this card's
        lines += [f"### {name}", ""] + [("##" + line if line.startswith("#") else line)
                                         for line in table.splitlines()] + [""]
    return "\n".join(line for line in lines if line is not None)
