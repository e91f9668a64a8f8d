"""Converting a trained vanilla run to CoCA with `model.init_from`: what W_t starts from."""
import json
from pathlib import Path

import pytest
import torch

from tests.runs import QUICK, REPO, checkpoint_dir, finetune, losses, weights
from conf.errors import EXIT_PREEMPTED

COMMON = [*QUICK, "logger.mode=disabled", "trainer.save_every=100"]
FROZEN = ["optim.lr=0.0", "trainer.max_steps=1"]  # a step that changes nothing: the starting weights


@pytest.fixture(scope="module")
def parent(train_here, tmp_path_factory):
    """A vanilla run trained two steps: the parent every conversion here starts from (read only)."""
    run_dir = tmp_path_factory.mktemp("vanilla") / "parent"
    assert train_here(f"run_dir={run_dir}", *COMMON, "model.attention=vanilla", "trainer.max_steps=2") == 0
    return run_dir


def test_t_init_decides_w_t_when_converting_a_vanilla_parent(env, tmp_path, parent):
    # Both children in one process: a sweep, job 0 then job 1.
    sweep = tmp_path / "sweep"
    code, out = finetune(["-m", "model.t_init=k_proj,random", f"hydra.sweep.dir={sweep}", *COMMON, *FROZEN,
                          "model.attention=slack", f"model.init_from={parent}", "seed=1"], env, REPO)
    assert code == 0, out
    children = {t_init: weights(sweep / f"{job}-tiny", 1) for job, t_init in enumerate(("k_proj", "random"))}
    trained = weights(parent, 2)
    for name, value in trained.items():
        assert torch.equal(children["k_proj"][name], value), name
        assert torch.equal(children["random"][name], value) != name.endswith("self_attn.k_proj.weight"), name
    # Drawn with the model's initializer_range (0.02), not left at the parent's scale.
    w_t = children["random"]["model.layers.0.self_attn.k_proj.weight"]
    assert abs(w_t.std().item() - 0.02) < 0.005


def test_low_frequency_slices_convert_a_vanilla_parent_resume_and_evaluate(train_here, tmp_path, parent):
    """model.coca_slices=low_frequency from a vanilla parent: W_t drawn afresh only on the CoCA
    slices (the tiny model trained at 2048 positions: slices 6 and 7 of 8 per head), the cut
    recorded, a stopped run resumed to the same losses, another coca_slices on resume refused, and
    the checkpoint evaluated."""
    from train.evaluation.run import evaluate
    from tests.test_evaluate import eval_config

    args = [*COMMON, "model.attention=exact", "model.coca_slices=low_frequency", f"model.init_from={parent}",
            "model.t_init=random", "trainer.max_steps=4", "trainer.save_every=2"]
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    assert train_here(f"run_dir={whole}", *args, "optim.lr=0.0") == 0  # lr 0: the starting weights
    config = json.loads((checkpoint_dir(whole, 4) / "config.json").read_text())
    assert (config["coca_variant"], config["coca_slices"], config["coca_first_slice"]) == ("exact", "low_frequency", 6)
    start, trained = weights(whole, 4), weights(parent, 2)
    slice_of_row = torch.arange(32) % 16 % 8  # k_proj: 2 KV heads of head_dim 16, slice j = row mod 8
    for name, value in trained.items():
        if name.endswith("self_attn.k_proj.weight"):
            assert torch.equal(start[name][slice_of_row < 6], value[slice_of_row < 6]), name  # still W_k
            assert not torch.equal(start[name][slice_of_row >= 6], value[slice_of_row >= 6]), name
        else:
            assert torch.equal(start[name], value), name
    assert train_here(f"run_dir={halves}", *args, "trainer.max_wall_time_min=0") == EXIT_PREEMPTED
    with pytest.raises(ValueError, match="model.coca_slices was low_frequency there, this run has all"):
        train_here(f"run_dir={halves}", *args, "model.coca_slices=all")
    assert train_here(f"run_dir={halves}", *args) == 0
    assert train_here(f"run_dir={tmp_path / 'again'}", *args) == 0
    assert losses(halves) == losses(tmp_path / "again")
    results = json.loads(evaluate(eval_config(halves, "eval.lengths=[64,128]", "eval.stride=64", "eval.num_docs=2",
                                              "eval.passkey.lengths=[]", "logger.mode=disabled")).read_text())
    assert results["model"]["coca_variant"] == "exact" and results["perplexity"]["by_length"][1]["ppl"] > 1


@pytest.mark.parametrize("slices", ["all", "low_frequency"])
def test_t_init_fit_brings_coca_scores_closer_to_the_parents_than_w_k(train_here, tmp_path, parent, caplog, slices):
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={tmp_path / 'fit'}", *COMMON, *FROZEN, "model.attention=slack",
                          f"model.coca_slices={slices}", f"model.init_from={parent}", "model.t_init=fit") == 0
    line = next(r.getMessage() for r in caplog.records if "model.t_init=fit" in r.getMessage())
    gaps = [tuple(map(float, pair.split(" -> "))) for pair in line.split("from W_k -> fitted: ")[1].split(", ")]
    assert len(gaps) == 2 and all(after < before for before, after in gaps), line
    assert line.split(" sequences in ")[1].split(" s;")[0].isdigit(), line  # the fit says how long it took
    fitted, trained = weights(tmp_path / "fit", 1), weights(parent, 2)
    slice_of_row = torch.arange(32) % 16 % 8  # k_proj: 2 KV heads of head_dim 16, slice j = row mod 8
    vanilla_rows = slice_of_row < (6 if slices == "low_frequency" else 0)
    for name, value in trained.items():
        if name.endswith("self_attn.k_proj.weight"):
            assert torch.equal(fitted[name][vanilla_rows], value[vanilla_rows]), name
            assert not torch.equal(fitted[name][~vanilla_rows], value[~vanilla_rows]), name
        else:
            assert torch.equal(fitted[name], value), name


@pytest.mark.long
def test_t_init_fit_under_zero3_on_two_ranks_fits_the_w_t_of_one_rank(train_here, tmp_path, sample_tokenizer, env):
    """ZeRO-3 leaves each rank a shard of every weight: the fit gathers a layer whole, and every
    shard ends as rank 0's fit; the same W_t as one rank fits under ZeRO-2, every other weight the parent's."""
    from tests.test_gguf import tiny_llama
    from tests.test_lora import PRETRAINED

    folder = tmp_path / "pretrained"
    tiny_llama(sample_tokenizer).save_pretrained(folder)
    sample_tokenizer.save_pretrained(folder)
    args = [*PRETRAINED, *FROZEN, f"model.name_or_path={folder}", "model.attention=slack", "model.t_init=fit",
            "trainer.micro_batch_size=1"]
    assert train_here(f"run_dir={tmp_path / 'one'}", *args, "deepspeed=zero2") == 0
    code, out = finetune([f"run_dir={tmp_path / 'two'}", *args, "deepspeed=zero3"], env, tmp_path, nproc=2)
    assert code == 0, out[-3000:]
    assert "model.t_init=fit: W_t fitted" in out
    one, two = weights(tmp_path / "one", 1), weights(tmp_path / "two", 1)
    assert one.keys() == two.keys()
    for name, value in tiny_llama(sample_tokenizer).state_dict().items():
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6, msg=name)
        assert torch.equal(one[name], value) != name.endswith("self_attn.k_proj.weight"), name


def test_t_init_fit_keeps_w_k_where_the_fit_scores_worse(train_here, tmp_path, parent, caplog, monkeypatch):
    """A fit that would widen the gap to the parent's scores on its own calibration text (forced here:
    the solver returns a huge W_t) leaves the layer's W_k as it was."""
    import train.trainer.fit_w_t as fit

    monkeypatch.setattr(fit.torch.linalg, "solve", lambda gram, rhs: torch.full_like(rhs, 1e3))
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={tmp_path / 'fit'}", *COMMON, *FROZEN, "model.attention=slack",
                          f"model.init_from={parent}", "model.t_init=fit") == 0
    line = next(r.getMessage() for r in caplog.records if "model.t_init=fit" in r.getMessage())
    gaps = [tuple(map(float, pair.split(" -> "))) for pair in line.split("from W_k -> fitted: ")[1].split(", ")]
    assert len(gaps) == 2 and all(after == before for before, after in gaps), line
    fitted, trained = weights(tmp_path / "fit", 1), weights(parent, 2)
    for name, value in trained.items():
        assert torch.equal(fitted[name], value), name


def test_t_init_fit_needs_a_parent():
    from conf.schema import validate
    from tests.test_config import compose_config

    with pytest.raises(ValueError, match=r"model.t_init=fit fits W_t to a vanilla parent's scores: it needs "
                                         r"a vanilla parent \(model.name_or_path or model.init_from\)"):
        validate(compose_config("model.t_init=fit"))


def test_t_init_fit_converts_a_pretrained_model_once_and_a_resume_keeps_the_trained_w_t(
        train_here, tmp_path, sample_tokenizer, caplog):
    """The main path (model.name_or_path, a pretrained vanilla LLaMA) fits W_t as init_from does; a
    resumed run continues from its checkpoint's W_t instead of fitting again."""
    from tests.test_gguf import tiny_llama
    from tests.test_lora import PRETRAINED

    folder = tmp_path / "pretrained"
    tiny_llama(sample_tokenizer).save_pretrained(folder)
    sample_tokenizer.save_pretrained(folder)
    args = [*PRETRAINED, f"model.name_or_path={folder}", "model.attention=slack", "model.t_init=fit",
            "trainer.save_every=2"]
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={tmp_path / 'frozen'}", *args, *FROZEN) == 0
    line = next(r.getMessage() for r in caplog.records if "model.t_init=fit" in r.getMessage())
    gaps = [tuple(map(float, pair.split(" -> "))) for pair in line.split("from W_k -> fitted: ")[1].split(", ")]
    assert len(gaps) == 2 and all(after < before for before, after in gaps), line
    fitted = weights(tmp_path / "frozen", 1)
    for name, value in tiny_llama(sample_tokenizer).state_dict().items():
        assert torch.equal(fitted[name], value) != name.endswith("self_attn.k_proj.weight"), name
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    assert train_here(f"run_dir={whole}", *args, "trainer.max_steps=4") == 0
    assert train_here(f"run_dir={halves}", *args, "trainer.max_steps=2") == 0
    caplog.clear()
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={halves}", *args, "trainer.max_steps=4") == 0
    assert not any("model.t_init=fit" in r.getMessage() for r in caplog.records)
    assert losses(halves) == losses(whole)


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_init_from_an_earlier_step_loads_that_step_not_the_latest(train_here, tmp_path, zero):
    """DeepSpeed's own weights-only load under ZeRO-3 follows the folder's `latest`, whatever step
    was asked for: a new stage from step 2 of a run that went on to step 4 got step 4's weights."""
    parent = tmp_path / "parent"
    args = [*COMMON, f"deepspeed={zero}", "model.attention=vanilla"]
    assert train_here(f"run_dir={parent}", *args, "trainer.max_steps=4", "trainer.save_every=2") == 0
    earlier = checkpoint_dir(parent, 2)
    assert train_here(f"run_dir={tmp_path / 'child'}", *args, *FROZEN, f"model.init_from={earlier}") == 0
    child, asked, latest = weights(tmp_path / "child", 1), weights(parent, 2), weights(parent, 4)
    assert child.keys() == asked.keys()
    assert any(not torch.equal(asked[name], latest[name]) for name in asked)
    for name, value in asked.items():
        assert torch.equal(child[name], value), name


@pytest.mark.long
def test_init_from_a_one_rank_zero2_run_into_two_ranks_under_zero3(train_here, tmp_path, parent, env):
    """Another ZeRO stage and another world size: the new stage starts from the parent's weights."""
    code, out = finetune([f"run_dir={tmp_path / 'two'}", *COMMON, *FROZEN, "deepspeed=zero3", "model.attention=vanilla",
                          f"model.init_from={parent}", "trainer.micro_batch_size=1"], env, tmp_path, nproc=2)
    assert code == 0, out[-3000:]
    child, trained = weights(tmp_path / "two", 1), weights(parent, 2)
    assert child.keys() == trained.keys()
    for name, value in trained.items():
        assert torch.equal(child[name], value), name


@pytest.mark.parametrize("name", ["a file", "none", "auto"])
def test_an_init_from_that_is_no_checkpoint_is_refused_under_its_own_key(train_here, tmp_path, monkeypatch, name):
    """resume's special values mean nothing here: a folder named `none` taken as no init_from would
    train from scratch without a word."""
    from conf.errors import BadInput

    monkeypatch.chdir(tmp_path)
    Path(name).write_text("not a checkpoint") if name == "a file" else Path(name).mkdir()
    with pytest.raises(BadInput, match=rf"^model.init_from='{name}' holds no complete checkpoint .*step folder$"):
        train_here(f"run_dir={tmp_path / 'child'}", *COMMON, "model.attention=slack", f"model.init_from={name}")
