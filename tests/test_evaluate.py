"""Evaluation, export, plots and generation, on one tiny checkpoint trained here for two steps."""
import json

import pytest
import torch
import torch.nn.functional as F
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

from conf.errors import BadInput
from conf.data_schema import DataConfig
from data.tokenizer import load_tokenizer
from tests.runs import REPO, launch
from train.coca import convert_to_coca
from train.modeling_coca_llama import one_rope_scale
from train.evaluate import EvaluateConfig
from train.evaluation.config import validate
from train.evaluation.documents import documents
from data.passkey import QUESTION, TASK, key_line
from train.evaluation.passkey import Prompt, answer, build_prompt, is_correct, make_prompts, pieces
from train.evaluation.perplexity import plan_windows, sliding_window_perplexity
from train.evaluation.report import write_results
from train.evaluation.run import evaluate
from train.inference.config import ExportConfig, GenerateConfig
from train.inference.export import export
from train.inference.generate import generate
from train.inference.load import checkpoint_config, load_checkpoint_tokenizer, load_model, resolve
from train.model import load_pretrained
from train.plot import main as plot_main

SHARED_DATA = REPO.parent / "shared" / "data"
CONF = REPO / "conf"
SMALL_DATA = ["data.seq_len=64", "data.sample.num_books=6", "data.sample.words_per_book=3000"]
STEP = "step-00000002"


pytestmark = pytest.mark.usefixtures("one_thread")


def train(run_dir, env, *extra, nproc=1):
    args = [f"run_dir={run_dir}", "trainer.max_steps=2", "trainer.save_every=2", *SMALL_DATA, *extra]
    code, out = launch("train.finetune", args, env, nproc=nproc)
    assert code == 0, out
    return run_dir


# `trained` and `exported` (tests/conftest.py): the session's tiny slack run, trained two steps, and its
# export; tests/test_hub.py uses them too.


@pytest.fixture(scope="module")
def model(trained):
    ckpt = resolve(str(trained))
    return load_model(ckpt, checkpoint_config(ckpt, None, "eval.rope_scaling"))


def eval_config(checkpoint, *overrides) -> EvaluateConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"checkpoint={checkpoint}", *SMALL_DATA[1:], *overrides])
    return OmegaConf.to_object(cfg)


# --- sliding-window perplexity -------------------------------------------------------------

@pytest.mark.parametrize("doc_len, length, stride", [(256, 128, 64), (256, 256, 64), (320, 192, 64), (256, 64, 64)])
def test_sliding_windows_score_every_token_once(doc_len, length, stride):
    scored = [t for start, count in plan_windows(doc_len, length, stride)
              for t in range(start + length - count, start + length)]
    if length > stride:
        assert scored == list(range(1, doc_len))  # each token once, in order; token 0 has no context
    else:  # disjoint windows: a window's first token has no context inside it
        assert scored == [t for t in range(1, doc_len) if t % length]
    with pytest.raises(ValueError, match="multiples of eval.stride"):
        plan_windows(doc_len, length + 1, stride)


def test_window_as_long_as_the_document_is_the_full_sequence_loss(model):
    docs = [torch.randint(0, 512, (128,), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    result = sliding_window_perplexity(model, docs, 128, 64, batch_size=2)
    with torch.no_grad():
        direct = torch.stack([model(doc[None], labels=doc[None]).loss for doc in docs]).mean()
    assert (result.windows, result.tokens) == (3, 3 * 127)
    assert result.nll == pytest.approx(direct.item(), rel=1e-6)


def test_sliding_windows_match_the_textbook_loop_at_any_batch_size(model):
    docs = [torch.randint(0, 512, (192,), generator=torch.Generator().manual_seed(10 + i)) for i in range(2)]
    length, stride = 64, 32
    nll, count, prev_end = 0.0, 0, 0
    with torch.no_grad():  # Hugging Face's recipe: mask all but the new tokens of each window
        for doc in docs:
            prev_end = 0
            for begin in range(0, len(doc) - length + 1, stride):
                window = doc[begin:begin + length][None]
                labels = window.clone()
                labels[:, :-(begin + length - prev_end)] = -100
                logits = model(window, position_ids=torch.arange(length)[None]).logits
                losses = F.cross_entropy(logits[0, :-1], labels[0, 1:], reduction="none", ignore_index=-100)
                nll += losses.sum().item()
                count += (labels[0, 1:] != -100).sum().item()
                prev_end = begin + length
    for batch_size in (1, 3, 16):
        result = sliding_window_perplexity(model, docs, length, stride, batch_size)
        assert result.tokens == count == 2 * 191
        assert result.nll == pytest.approx(nll / count, rel=1e-6)


def test_dynamic_ntk_scores_each_length_as_if_it_came_first():
    """transformers keeps dynamic NTK's frequencies from the longest sequence seen; evaluation resets
    them, so perplexity and passkey at 24 tokens do not depend on having measured 48 first."""
    from tests.test_coca import ROPE, tiny_config, tiny_model

    model = convert_to_coca(tiny_model(config=tiny_config(rope=ROPE["dynamic"]), dtype=torch.float32), "slack")
    docs = [torch.randint(0, 97, (48,), generator=torch.Generator().manual_seed(i)) for i in range(2)]

    def first_24_loss():
        with torch.no_grad():
            return torch.stack([model(doc[None, :24], labels=doc[None, :24]).loss for doc in docs]).mean().item()

    before, fresh = first_24_loss(), sliding_window_perplexity(model, docs, 24, 8, batch_size=2).nll
    sliding_window_perplexity(model, docs, 48, 8, batch_size=2)
    assert first_24_loss() != pytest.approx(before, rel=1e-4)  # transformers' memory: 48's frequencies
    assert sliding_window_perplexity(model, docs, 24, 8, batch_size=2).nll == fresh


# --- dynamic NTK in generation -----------------------------------------------------------------


def _generated_logits(generate, model, prompt: torch.Tensor, new_tokens: int):
    """(the tokens `generate` wrote after `prompt`, their logits), greedy and cached."""
    out = generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, do_sample=False,
                   use_cache=True, pad_token_id=0, return_dict_in_generate=True, output_logits=True)
    return out.sequences[0, prompt.shape[1]:], torch.stack(out.logits)[:, 0]


def _one_forward_logits(model, prompt: torch.Tensor, written: torch.Tensor, total: int) -> torch.Tensor:
    """The logits that predicted each written token, from one forward over the whole sequence at
    dynamic NTK's scale for `total` tokens: what cached generation should reproduce."""
    sequence = torch.cat([prompt[0], written[:-1]])[None]
    with torch.no_grad(), one_rope_scale(model, total):
        return model(sequence).logits[0, prompt.shape[1] - 1:].float()  # as generate returns them


@pytest.mark.parametrize("variant", ["vanilla", "slack", "exact"])
def test_cached_generation_past_the_window_keeps_one_rope_scale(variant):
    """A 14-token prompt and 6 new tokens past a 16-position window under dynamic NTK: plain cached
    generation rotates each new query at a scale its cached keys never had; within one_rope_scale
    every step equals one forward over the whole sequence at the scale for its 20 tokens."""
    from tests.test_coca import ROPE, tiny_config, tiny_model

    model = tiny_model(config=tiny_config(rope=ROPE["dynamic"]), dtype=torch.float64)
    if variant != "vanilla":
        model = convert_to_coca(model, variant)
    prompt, new_tokens = torch.randint(0, 97, (1, 14), generator=torch.Generator().manual_seed(3)), 6
    total = prompt.shape[1] + new_tokens
    with torch.no_grad():
        written, plain = _generated_logits(model.generate, model, prompt, new_tokens)
    assert (plain - _one_forward_logits(model, prompt, written, total)).abs().max() > 1e-3  # the defect is real
    with torch.no_grad(), one_rope_scale(model, total):
        written, fixed = _generated_logits(model.generate, model, prompt, new_tokens)
    torch.testing.assert_close(fixed, _one_forward_logits(model, prompt, written, total), rtol=1e-5, atol=1e-5)


def test_an_exported_coca_model_generates_at_one_rope_scale():
    """Exports ship modeling_coca_llama.py, whose generate holds the scale as the project's own code does."""
    from tests.test_coca import ROPE, tiny_config, tiny_model
    from train.configuration_coca_llama import CocaLlamaConfig
    from train.modeling_coca_llama import CocaLlamaForCausalLM

    config = tiny_config(CocaLlamaConfig, rope=ROPE["dynamic"], coca_variant="slack")
    model = tiny_model(CocaLlamaForCausalLM, config=config)
    prompt = torch.randint(0, 97, (1, 14), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        written, logits = _generated_logits(model.generate, model, prompt, 6)
    torch.testing.assert_close(logits, _one_forward_logits(model, prompt, written, 20), rtol=1e-5, atol=1e-5)


def test_a_passkey_answer_that_fits_the_window_is_the_same_with_dynamic_ntk(sample_tokenizer):
    """Prompt and answer within max_position_embeddings: dynamic NTK changes nothing, even after the
    model has seen a longer sequence (which grows transformers' scale until reset)."""
    from tests.test_coca import ROPE, tiny_config, tiny_model

    (prompt,) = make_prompts(sample_tokenizer, 80, 1, [0.5], seed=0)
    window = len(prompt.input_ids) + 8
    plain = tiny_model(config=tiny_config(vocab_size=len(sample_tokenizer), max_position_embeddings=window))
    dynamic = tiny_model(config=tiny_config(vocab_size=len(sample_tokenizer), max_position_embeddings=window,
                                            rope=ROPE["dynamic"]))
    with torch.no_grad():
        dynamic(torch.zeros(1, 3 * window, dtype=torch.long))
    assert answer(dynamic, sample_tokenizer, prompt, 8) == answer(plain, sample_tokenizer, prompt, 8)


# --- passkey ---------------------------------------------------------------------------------

def tokenizers(trained_dir):
    found = {"sample": load_checkpoint_tokenizer(resolve(str(trained_dir)))}
    if (SHARED_DATA / "llama2-tokenizer").is_dir():
        found["llama2"] = load_tokenizer(str(SHARED_DATA / "llama2-tokenizer"))
    return found


@pytest.mark.parametrize("haystack", ["books", "filler"])
def test_passkey_prompts_hold_the_key_at_the_depth_and_fill_the_length(trained, haystack):
    for name, tok in tokenizers(trained).items():
        book = tok("The old house stood at the end of the lane, " * 400, add_special_tokens=False)["input_ids"]
        books = [book] if haystack == "books" else None
        for length in (120, 2000):
            for prompt in make_prompts(tok, length, 4, [0.0, 0.3, 0.5, 1.0], seed=0, books=books):
                assert len(prompt.input_ids) == length, (name, length, prompt.depth)
                text = tok.decode(prompt.input_ids, skip_special_tokens=True)
                assert text.endswith(QUESTION) and text.count(prompt.key) == 2  # the key line states it twice
                assert text.startswith(TASK) and key_line(prompt.key) in text
                assert prompt.before == round(prompt.depth * prompt.haystack)
                if haystack == "filler":
                    assert "The grass is green." in text and "old house" not in text
                else:
                    assert "old house" in text and "The grass is green." not in text
        with pytest.raises(BadInput, match="a passkey prompt needs at least"):
            build_prompt(tok, "80417", 20, 0.5, book)


def test_the_fixed_part_of_a_passkey_prompt_leaves_the_window_to_the_key_question_distance(sample_tokenizer):
    """The task line, question and answer take at most 60 tokens, so at L = 256 a key can sit ~0.8 L
    from its question; the whole fixed part, the key line (the key twice) included, is under 90."""
    parts = pieces(sample_tokenizer, "80417")
    assert len(parts.task) + len(parts.question) + len(parts.answer) <= 60 and parts.fixed <= 90


def test_passkey_keys_are_seeded_five_digit_numbers_and_scored_by_prefix(trained):
    tok = load_checkpoint_tokenizer(resolve(str(trained)))
    first = make_prompts(tok, 200, 6, [0.0, 0.5, 1.0], seed=1)
    assert [p.key for p in first] == [p.key for p in make_prompts(tok, 200, 6, [0.0, 0.5, 1.0], seed=1)]
    assert [p.key for p in first] != [p.key for p in make_prompts(tok, 200, 6, [0.0, 0.5, 1.0], seed=2)]
    assert all(len(p.key) == 5 and p.key.isdigit() for p in first)
    assert [p.depth for p in first] == [0.0, 0.5, 1.0] * 2
    assert is_correct(" 80417. Remember", "80417") and not is_correct(" 8041", "80417")
    assert not is_correct("The pass key is 80417", "80417")


# --- export ----------------------------------------------------------------------------------

def test_export_gives_the_checkpoint_model_with_identical_logits(trained, exported):
    step = trained / "checkpoints" / STEP
    # The model as DeepSpeed holds it (ZeRO-2 keeps whole fp32 weights in the model states file).
    module = torch.load(step / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    reference = convert_to_coca(LlamaForCausalLM(AutoConfig.from_pretrained(step)), "slack").eval()
    reference.load_state_dict(module, strict=True)
    ours = load_pretrained(exported).eval()
    ids = torch.randint(0, 512, (2, 96))
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, reference(ids).logits)
    # A plain from_pretrained refuses the folder rather than run it as vanilla (tests/test_hub.py: with
    # trust_remote_code=True, in a process without this project).
    with pytest.raises(ValueError, match="contains custom code"):
        AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=False)
    saved = json.loads((exported / "config.json").read_text())
    assert saved["coca_variant"] == "slack" and saved["use_cache"] is True and saved["model_type"] == "coca_llama"
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= {p.name for p in exported.iterdir()}
    assert [p.name for p in exported.parent.iterdir()] == ["tiny"]  # no scratch folder left behind


@pytest.mark.long
def test_zero3_checkpoint_of_two_ranks_exports_every_parameter(env, tmp_path):
    run_dir = train(tmp_path / "z3", env, "deepspeed=zero3", "trainer.micro_batch_size=1", "logger.mode=disabled",
                    nproc=2)
    step = run_dir / "checkpoints" / STEP
    assert len(list(step.glob("*optim_states.pt"))) == 2  # one shard per rank
    out = export(ExportConfig(checkpoint=str(step), output=str(tmp_path / "export")))
    config = AutoConfig.from_pretrained(step)
    expected_shapes = {k: v.shape for k, v in LlamaForCausalLM(config).state_dict().items()}
    model, info = load_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert {k: v.shape for k, v in model.state_dict().items()} == expected_shapes
    fresh = convert_to_coca(LlamaForCausalLM(config), config.coca_variant).eval()
    fresh.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(step.parent), tag=STEP), strict=True)
    ids = torch.randint(0, 512, (2, 64))
    with torch.no_grad():
        logits = model.eval()(ids).logits
        assert torch.isfinite(logits).all()
        assert torch.equal(logits, fresh(ids).logits)


# --- the evaluate command --------------------------------------------------------------------

def test_evaluate_command_writes_results_and_joins_the_wandb_run(trained, env):
    args = [f"checkpoint={trained}", "eval.lengths=[64,128]", "eval.stride=64", "eval.num_docs=2",
            "eval.passkey.lengths=[160]", "eval.passkey.cases=2", *SMALL_DATA[1:], "logger.mode=offline"]
    code, out = launch("train.evaluate", args, env)
    assert code == 0, out
    folder = trained / "eval" / STEP
    results = json.loads((folder / "eval.json").read_text())
    rows = results["perplexity"]["by_length"]
    assert [r["length"] for r in rows] == [64, 128]
    assert [r["tokens"] for r in rows] == [2 * 126, 2 * 127]  # 64-token windows by 64: one unscored per window
    assert all(1 < r["ppl"] < 10_000 for r in rows)
    # Every number with what it rests on: per-document NLL, the documents' books and offsets, intervals.
    ppl = results["perplexity"]
    assert ppl["num_docs"] == 2 and ppl["available_docs"] > 2 and ppl["books"] == 4
    # A cap spreads each book's share through it: the middle of the book, not its opening.
    assert [d["book"] for d in ppl["documents"]] == [0, 1] and all(d["offset"] > 0 for d in ppl["documents"])
    for r in rows:
        assert len(r["doc_nll"]) == 2 and r["nll"] == pytest.approx(sum(r["doc_nll"]) / 2)
        assert r["ppl_ci"][0] <= r["ppl"] <= r["ppl_ci"][1]
    (passkey,) = results["passkey"]["by_length"]
    assert passkey["length"] == 160 and passkey["cases"] == 2 and 0 <= passkey["accuracy"] <= 1
    assert passkey["ci"][0] <= passkey["accuracy"] <= passkey["ci"][1]
    assert sum(d["cases"] for d in passkey["by_depth"].values()) == 2
    assert "| perplexity |" in (folder / "eval.md").read_text()
    assert (folder / "eval.png").read_bytes()[:4] == b"\x89PNG"
    run_id = json.loads((trained / "checkpoints" / STEP / "trainer_state.json").read_text())["wandb_run_id"]
    assert len(list((trained / "wandb").glob(f"offline-run-*-{run_id}"))) == 2  # training, then evaluation


def test_export_evaluates_like_its_checkpoint_and_rope_scaling_applies(trained, exported, tmp_path):
    settings = ["eval.lengths=[64]", "eval.stride=64", "eval.num_docs=2", "eval.passkey.lengths=[]",
                "logger.mode=disabled"]
    from_checkpoint = json.loads(evaluate(eval_config(trained, *settings, f"eval.output_dir={tmp_path}")).read_text())
    path = evaluate(eval_config(exported, *settings))
    assert path == exported / "eval" / "default" / "eval.json"
    from_export = json.loads(path.read_text())
    assert from_export["perplexity"] == from_checkpoint["perplexity"]
    scaled_path = evaluate(eval_config(exported, *settings, "eval.rope_scaling={rope_type:linear,factor:2.0}"))
    assert scaled_path.parent.name == "linear-x2"
    scaled = json.loads(scaled_path.read_text())
    assert scaled["model"]["rope_parameters"]["rope_type"] == "linear" and scaled["label"].endswith("+ linear-x2")
    assert scaled["perplexity"]["by_length"][0]["nll"] != from_export["perplexity"]["by_length"][0]["nll"]


# --- bad input -------------------------------------------------------------------------------

def test_bad_paths_and_values_are_named(trained, exported, tmp_path):
    with pytest.raises(BadInput, match="is not a folder"):
        resolve(str(tmp_path / "missing"))
    half = tmp_path / "half" / "checkpoints" / STEP
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # a save killed before trainer_state.json
    for path in (tmp_path, half.parent.parent, half):
        with pytest.raises(BadInput, match="is not a checkpoint"):
            resolve(str(path))
    with pytest.raises(ValueError, match=r"eval.lengths has 100: .* multiple of eval.stride=64"):
        validate(eval_config(trained, "eval.lengths=[64,100]", "eval.stride=64"))
    with pytest.raises(ValueError, match=r"eval.passkey.depths=\[1.5\]"):
        validate(eval_config(trained, "eval.passkey.depths=[1.5]"))
    with pytest.raises(ValueError, match="eval.rope_scaling.rope_type='ntk' is not supported"):
        checkpoint_config(resolve(str(exported)), {"rope_type": "ntk", "factor": 4.0}, "eval.rope_scaling")
    tok = load_checkpoint_tokenizer(resolve(str(exported)))
    with pytest.raises(ValueError, match=r"test books holds no document of 1000000 tokens \(max of eval.lengths\)"):
        documents(DataConfig(), "test", tok, 1_000_000)
    with pytest.raises(ValueError, match=r"eval.num_docs=1000, but .* has only \d+ documents of 512 tokens"):
        documents(DataConfig(), "test", tok, 512, cap=1000)
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        export(ExportConfig(checkpoint=str(trained), output=str(exported)))


def test_the_real_test_split_is_read_whole(shared_data, tmp_path):
    """PG-19's 4 test books in the sample (65,103 to 95,321 LLaMA-2 tokens, shared/data/SOURCES.md)
    hold 7 documents of 32K: one from the shortest book, two from each other."""
    tok = load_tokenizer(str(shared_data / "llama2-tokenizer"))
    cfg = DataConfig(source="local", path=str(shared_data / "pg19-sample"), cache_dir=str(tmp_path))
    found = documents(cfg, "test", tok, 32768)
    assert (found.books, found.available, len(found.docs)) == (4, 7, 7)
    assert all(len(doc.ids) == 32768 for doc in found.docs) and found.docs[0].ids[0] == tok.bos_token_id
    assert [(doc.book, doc.offset) for doc in found.docs][:5] == [(0, 0), (1, 0), (2, 0), (3, 0), (1, 32768)]
    with pytest.raises(ValueError, match="eval.num_docs=8, but local:.* has only 7 documents of 32768 tokens"):
        documents(cfg, "test", tok, 32768, cap=8)


def test_bad_input_on_the_command_line_is_one_line_and_status_2(trained, env):
    code, out = launch("train.evaluate", [f"checkpoint={trained}", "eval.lengths=[64,100]", "eval.stride=64"], env)
    assert code == 2, out
    assert "Traceback" not in out
    assert out.strip().splitlines()[-1].endswith("bad input: eval.lengths has 100: every length must be a positive "
                                                 "multiple of eval.stride=64, so that each document's windows end "
                                                 "at its end")


# --- plots and generation --------------------------------------------------------------------

def fake_results(label, ppl, seed=None, group=None, spread=0.1, docs=8, accuracy=(1.0, 0.5)):
    """An eval.json as train.evaluate writes it, with per-document NLL spread around log(ppl)."""
    import math
    import random

    rng = random.Random(f"{label}:{seed}")
    noise = [rng.gauss(0, spread) for _ in range(docs)]
    rows = []
    for n, p in zip((512, 1024, 2048), ppl):
        doc_nll = [math.log(p) + e - sum(noise) / docs for e in noise] if math.isfinite(p) else [800.0] * docs
        rows.append({"length": n, "ppl": p, "ppl_ci": [p, p], "nll": sum(doc_nll) / docs, "doc_nll": doc_nll})
    passkey = [{"length": n, "cases": 2, "correct": round(2 * a), "accuracy": a, "ci": [0.0, 1.0],
                "by_depth": {"0.0": {"cases": 2, "correct": round(2 * a), "accuracy": a}}}
               for n, a in zip((512, 2048), accuracy)]
    return {"label": label, "group": group or label, "run": {"name": label, "seed": seed}, "checkpoint": f"/x/{label}",
            "step": None, "device": "cpu",
            "model": {"coca_variant": "slack", "rope_parameters": {"rope_type": "default"}, "dtype": "float32"},
            "perplexity": {"data": "d", "split": "test", "books": 2, "num_docs": docs, "available_docs": docs,
                           "doc_tokens": 2048, "stride": 512,
                           "documents": [{"book": i % 2, "title": "t", "offset": 2048 * (i // 2)} for i in range(docs)],
                           "by_length": rows},
            "passkey": {"cases": 2, "seed": 0, "by_length": passkey}}


def test_plot_command_writes_a_png_of_several_runs(tmp_path):
    vanilla = write_results(fake_results("vanilla", [9.2, 7.5, float("inf")]), tmp_path / "vanilla")
    coca = write_results(fake_results("CoCA + dynamic NTK", [9.9, 8.5, 8.3]), tmp_path / "coca")
    assert json.loads(vanilla.read_text())["perplexity"]["by_length"][2]["ppl"] is None  # inf is null in JSON
    assert "| perplexity | 9.20 | 7.50 | inf |" in (tmp_path / "vanilla" / "eval.md").read_text()
    plot_main([str(tmp_path / "runs.png"), str(vanilla), str(coca), "--title", "tiny"])
    assert (tmp_path / "runs.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit) as exit_info:
        plot_main([str(tmp_path / "runs.jpg"), str(vanilla)])
    assert exit_info.value.code == 2


def test_generate_greedy_is_deterministic_and_sampling_is_seeded(exported, capsys):
    greedy = GenerateConfig(checkpoint=str(exported), prompt="The sky", max_new_tokens=6)
    assert generate(greedy) == generate(greedy)
    assert "The sky" in capsys.readouterr().out
    sampled = GenerateConfig(checkpoint=str(exported), prompt="The sky", max_new_tokens=6, do_sample=True, seed=3)
    assert generate(sampled) == generate(sampled)
