"""Converting a trained vanilla run to CoCA with `model.init_from`: what W_t starts from."""
import pytest
import torch

from tests.runs import QUICK, REPO, finetune, losses, records, weights
from train.cli import EXIT_PREEMPTED

COMMON = [*QUICK, "logger.mode=disabled", "trainer.save_every=100"]
FROZEN = ["optim.lr=0.0", "trainer.max_steps=1"]  # a step that changes nothing: the starting weights


@pytest.fixture(scope="module")
def parent(env, tmp_path_factory):
    """A vanilla run trained two steps: the parent every conversion here starts from (read only)."""
    run_dir = tmp_path_factory.mktemp("vanilla") / "parent"
    code, out = finetune([f"run_dir={run_dir}", *COMMON, "model.attention=vanilla", "trainer.max_steps=2"], env, REPO)
    assert code == 0, out
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


def test_attention_distillation_trains_w_t_towards_the_parent_and_resumes_exactly(env, tmp_path, parent):
    distill = [*COMMON, "model.attention=slack", "model.trainable=t_only", "trainer.loss=attention_distill",
               f"model.init_from={parent}", "trainer.save_every=2", "optim.lr=3e-3", "optim.warmup_steps=1"]
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    code, out = finetune([f"run_dir={whole}", *distill, "trainer.max_steps=6"], env, REPO)
    assert code == 0, out
    assert "attention distillation against the vanilla attention of" in out
    logged = records(whole)
    train = {r["step"]: r["loss"] for r in logged if "loss" in r}
    assert 0 < train[6] < train[1] < 1  # a relative error, not a cross-entropy
    assert all(r["val_loss"] > 1 for r in logged if "val_loss" in r)  # validation: still the LM loss
    moved = weights(whole, 6)
    for name, value in weights(parent, 2).items():
        assert torch.equal(moved[name], value) != name.endswith("self_attn.k_proj.weight"), name
    # A run stopped half-way and resumed distils against the parent's W_k, not its own W_t.
    code, out = finetune([f"run_dir={halves}", *distill, "trainer.max_steps=6", "trainer.max_wall_time_min=0"],
                         env, REPO)
    assert code == EXIT_PREEMPTED, out  # stopped and saved after its first step
    code, out = finetune([f"run_dir={halves}", *distill, "trainer.max_steps=6"], env, REPO)
    assert code == 0 and "resumed from" in out, out
    assert losses(halves) == train


def test_attention_distillation_says_what_it_needs(env, tmp_path):
    code, out = finetune([f"run_dir={tmp_path}", *COMMON, "trainer.loss=attention_distill"], env, REPO)
    assert code == 2, out
    assert ("trainer.loss=attention_distill needs model.trainable=t_only, model.init_from=<the vanilla parent>"
            in out)
