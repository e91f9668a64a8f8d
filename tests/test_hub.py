"""Exports that load as CoCA with plain transformers (trust_remote_code), and never silently as vanilla."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM
from transformers.dynamic_module_utils import get_imports

import conf.schema
from conf.errors import BadInput
from train import coca
from tests.kernels import flex_defect
from tests.runs import REPO, launch
from tests.test_evaluate import SMALL_DATA, eval_config
from train.coca_folder import CODE_KEY, SHIPPED_FILES, project_file, sha256
from train.evaluation.run import evaluate
from train.inference.export import export
from train.inference.generate import generate
from train.inference.config import ExportConfig, GenerateConfig
from train.inference.hub import files_to_upload
from train.model import apply_rope_scaling, load_config, load_pretrained

SCRIPT = REPO / "tests" / "plain_transformers.py"
# 48 tokens: a length torch's flex kernel computes correctly on every CPU seen (tests/kernels.py).
IDS = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(0)).tolist()
PROMPT, NEW_TOKENS = "The sky", 6
DYNAMIC = {"rope_type": "dynamic", "factor": 4.0}
FLEX_DEFECT = flex_defect(16, len(IDS[0]))  # the tiny exports' head_dim
BACKENDS = ["eager", "sdpa"] + (["flex_attention"] if FLEX_DEFECT is None else [])


pytestmark = pytest.mark.usefixtures("one_thread")


VARIANTS = ["slack", "exact"]
_exports: dict = {}


# What each export is trained with: the variants, and slack on the low-frequency slices only.
TRAINED_WITH = {"slack": [], "exact": ["model.attention=exact"],
                "slack-low_frequency": ["model.attention=slack", "model.coca_slices=low_frequency"]}


def _export(variant, request):
    """(run_dir, export folder) of a tiny run trained two steps with this CoCA variant, made once;
    slack's is the session's `trained` run and its export (tests/conftest.py)."""
    if variant == "slack":
        return request.getfixturevalue("trained"), request.getfixturevalue("exported")
    if variant not in _exports:
        train_here, tmp_path_factory = request.getfixturevalue("train_here"), request.getfixturevalue("tmp_path_factory")
        run_dir = tmp_path_factory.mktemp(f"run-{variant}")
        assert train_here(f"run_dir={run_dir}", "trainer.max_steps=2", "trainer.save_every=2", *SMALL_DATA,
                          *TRAINED_WITH[variant]) == 0
        out = export(ExportConfig(checkpoint=str(run_dir), output=str(tmp_path_factory.mktemp("exports") / variant)))
        _exports[variant] = run_dir, out
    return _exports[variant]


@pytest.fixture(scope="module", params=VARIANTS)
def export_of(request):
    """(run_dir, export folder) of a tiny run trained two steps with this CoCA variant."""
    return _export(request.param, request)


@pytest.fixture(scope="module")
def every_export(request):
    """{variant: export folder} for every CoCA variant, and slack on the low-frequency slices: one
    plain-transformers process loads them all."""
    return {variant: _export(variant, request)[1] for variant in TRAINED_WITH}


def plain_transformers(folders: list, tmp_path: Path, env: dict, loads: dict, prompt: bool = False) -> dict:
    """The script's results for `loads` of each folder, run by `python -I` from a scratch folder: no
    project on the path."""
    spec = {"ids": IDS, "loads": loads, **({"prompt": PROMPT, "max_new_tokens": NEW_TOKENS} if prompt else {})}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    child_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    child_env["HF_MODULES_CACHE"] = str(tmp_path / "modules")  # transformers copies the remote code there
    proc = subprocess.run([sys.executable, "-I", str(SCRIPT), "spec.json", "results.pt", *map(str, folders)],
                          cwd=tmp_path, env=child_env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return torch.load(tmp_path / "results.pt", weights_only=False)


def remote(**model_kwargs) -> dict:
    return {"config": {"trust_remote_code": True}, "model": {"trust_remote_code": True, **model_kwargs}}


def logits(model, ids=IDS):
    with torch.no_grad():
        return model.eval()(torch.tensor(ids)).logits


def test_shipped_code_is_the_projects_own_and_needs_only_torch_and_transformers(export_of):
    _, folder = export_of
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "coca_llama" and config["architectures"] == ["CocaLlamaForCausalLM"]
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModelForCausalLM"}
    for name in SHIPPED_FILES:
        assert (folder / name).read_bytes() == project_file(name).read_bytes(), name
        # transformers refuses remote code importing a package that is not installed, even inside a function.
        assert set(get_imports(project_file(name))) <= {"__future__", "contextlib", "math", "sys", "typing", "torch",
                                                        "transformers"}, name
    assert set(config[CODE_KEY]) == set(SHIPPED_FILES)
    # train/coca.py cannot import conf (it ships alone), so the allowed values live in both.
    assert (coca.VARIANTS, (*coca.T_INITS, "fit"), coca.SLICES) == (conf.schema.VARIANTS, conf.schema.T_INITS,
                                                                    conf.schema.SLICES)


@pytest.mark.long
def test_plain_transformers_loads_the_export_as_coca_and_refuses_it_without_remote_code(every_export, env, tmp_path):
    # Every variant's export in one process: the loads below, for each.
    loads = {b: remote(attn_implementation=b) for b in BACKENDS}
    loads["sdpa"]["generate"] = True
    # Dynamic NTK at load time; max_position_embeddings 8 makes it rescale within IDS' 40 tokens.
    loads["dynamic"] = remote(rope_parameters={**DYNAMIC, "rope_theta": 10000.0}, max_position_embeddings=8)
    loads["without_trust"] = {}
    loads["trust_false"] = {"config": {"trust_remote_code": False}, "model": {"trust_remote_code": False}}
    results = plain_transformers(list(every_export.values()), tmp_path, env, loads, prompt=True)
    assert results["project_importable"] is False
    for variant, folder in every_export.items():
        check_plain_transformers_load(folder, results[str(folder)])
    config = json.loads((every_export["slack-low_frequency"] / "config.json").read_text())
    # tiny: head_dim 16, trained at 2048 positions: slices 6 and 7 of 8 have longer wavelengths
    assert (config["coca_slices"], config["coca_first_slice"]) == ("low_frequency", 6)


def test_flex_attention_is_among_the_kernels_checked_here():
    """The load test above checks flex attention only where torch's kernel is right on this CPU."""
    if FLEX_DEFECT is not None:
        pytest.skip(FLEX_DEFECT)
    assert "flex_attention" in BACKENDS


def check_plain_transformers_load(folder: Path, got: dict) -> None:
    for backend in BACKENDS:
        assert got[backend]["config_class"] == "CocaLlamaConfig", got[backend]
        assert got[backend]["attention_module"].startswith("transformers_modules.")  # the shipped coca.py
        ours = load_pretrained(folder, attn_implementation=backend)
        assert torch.equal(got[backend]["logits"], logits(ours)), backend
        torch.testing.assert_close(got[backend]["logits"], got["sdpa"]["logits"], rtol=1e-4, atol=1e-5)
    # What a CoCA model must not be: the same weights under vanilla attention.
    vanilla = LlamaForCausalLM.from_pretrained(folder)
    assert not torch.allclose(logits(vanilla), got["sdpa"]["logits"], atol=1e-3)

    config = load_config(folder)
    config.max_position_embeddings = 8
    ours_dynamic = load_pretrained(folder, config=apply_rope_scaling(config, DYNAMIC, "rope_scaling"))
    assert torch.equal(got["dynamic"]["logits"], logits(ours_dynamic))
    assert not torch.allclose(got["dynamic"]["logits"], got["sdpa"]["logits"], atol=1e-4)

    ids = torch.tensor(IDS)
    gen = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
    with torch.no_grad():
        expected = load_pretrained(folder).eval().generate(ids, **gen)
    assert torch.equal(got["sdpa"]["cached"], expected) and torch.equal(got["sdpa"]["uncached"], expected)
    assert torch.equal(got["sdpa"]["static"], expected)  # the cache compiled generation uses
    assert got["pipeline"] == PROMPT + generate(GenerateConfig(checkpoint=str(folder), prompt=PROMPT,
                                                               max_new_tokens=NEW_TOKENS))
    for refused in ("without_trust", "trust_false"):
        assert got[refused]["error"] == "ValueError" and "contains custom code" in got[refused]["message"]


def test_project_loaders_refuse_missing_or_edited_code_and_warn_of_another_version(export_of, tmp_path, caplog):
    _, folder = export_of
    missing, edited, other = (tmp_path / n for n in ("missing", "edited", "other"))
    for copy in (missing, edited, other):
        shutil.copytree(folder, copy)
    (missing / "modeling_coca_llama.py").unlink()
    with pytest.raises(BadInput, match=r"lacks its custom code file modeling_coca_llama.py: export"):
        load_pretrained(missing)
    with (edited / "coca.py").open("a") as f:
        f.write("# changed\n")
    with pytest.raises(ValueError, match=r"edited/coca.py was edited: its sha256 .* coca_code_sha256"):
        load_pretrained(edited)
    # Consistent with its own record, but not this project's coca.py: loads, and says so.
    (other / "coca.py").write_bytes(edited.joinpath("coca.py").read_bytes())
    config = json.loads((other / "config.json").read_text())
    config[CODE_KEY]["coca.py"] = sha256(other / "coca.py")
    (other / "config.json").write_text(json.dumps(config))
    load_pretrained(other)
    assert "other/coca.py comes from another version of this project" in caplog.text


def test_deepspeed_checkpoint_without_the_variant_is_refused(export_of, tmp_path):
    run_dir, _ = export_of
    copy = shutil.copytree(run_dir, tmp_path / "run")
    step_config = copy / "checkpoints" / "step-00000002" / "config.json"
    config = json.loads(step_config.read_text())
    del config["coca_variant"]
    step_config.write_text(json.dumps(config))
    (step_config.parent / "manifest.json").unlink()  # as saved before manifests, which would flag the edit
    with pytest.raises(ValueError, match=r"step-00000002/config.json lacks coca_variant, so a CoCA checkpoint "
                                         r"cannot be told from a vanilla one"):
        export(ExportConfig(checkpoint=str(copy), output=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


class FakeHub:
    """huggingface_hub.HfApi with no network: records what would be uploaded."""
    calls: list = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return "https://huggingface.co/fake/commit"


def test_push_to_hub_uploads_the_folder_with_its_model_card(export_of, tmp_path, monkeypatch):
    run_dir = Path(shutil.copytree(export_of[0], tmp_path / "run", symlinks=True))  # its own evaluation only
    variant = json.loads((run_dir / "checkpoints" / "step-00000002" / "config.json").read_text())["coca_variant"]
    evaluate(eval_config(run_dir, "eval.lengths=[64]", "eval.stride=64", "eval.num_docs=2",
                         "eval.passkey.lengths=[]", "logger.mode=disabled"))
    FakeHub.calls = []
    monkeypatch.setattr("huggingface_hub.HfApi", FakeHub)
    out = export(ExportConfig(checkpoint=str(run_dir), output=str(tmp_path / "out"), push_to_hub="me/tiny-coca"))
    files = files_to_upload(out)
    assert files == ["README.md", "coca.py", "config.json", "configuration_coca_llama.py", "generation_config.json",
                     "model.safetensors", "modeling_coca_llama.py", "tokenizer.json", "tokenizer_config.json"]
    (create, repo_id, _), (upload_call, kwargs) = FakeHub.calls
    assert (create, repo_id, upload_call) == ("create_repo", "me/tiny-coca", "upload_folder")
    assert kwargs["folder_path"] == str(out) and kwargs["repo_id"] == "me/tiny-coca"
    assert kwargs["allow_patterns"] == files
    card = (out / "README.md").read_text()
    assert f"- attention: **{variant}** CoCA" in card
    assert "- training length: 64 tokens per sequence, step 2, 256 tokens seen" in card
    assert 'AutoModelForCausalLM.from_pretrained("me/tiny-coca", trust_remote_code=True)' in card
    table = (run_dir / "eval" / "step-00000002" / "eval.md").read_text()
    assert "### step-00000002" in card and table.split("## Perplexity")[1].strip() in card


@pytest.mark.parametrize("repo_id", ["no-owner", "a/b/c", "me/bad name", "me/", "me/x..y"])
def test_malformed_repo_id_is_refused_before_anything_loads(repo_id, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.HfApi", None)  # any use of the client would fail differently
    with pytest.raises(ValueError, match=rf"^push_to_hub={re.escape(repr(repo_id))} is not a Hub repo id \(.*\): give owner/name"):
        export(ExportConfig(checkpoint=str(tmp_path / "missing"), output=str(tmp_path / "out"), push_to_hub=repo_id))


def test_bad_repo_id_on_the_command_line_is_one_line_and_status_2(env, tmp_path):
    code, log = launch("train.export", [f"checkpoint={tmp_path}", f"output={tmp_path / 'out'}",
                                        "push_to_hub=a/b/c"], env)
    assert code == 2 and "Traceback" not in log, log
    assert "bad input: push_to_hub='a/b/c' is not a Hub repo id" in log.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
