"""Converting a trained vanilla run to CoCA with `model.init_from`: what W_t starts from."""
import torch

from tests.runs import QUICK, REPO, finetune, weights

COMMON = [*QUICK, "logger.mode=disabled", "trainer.save_every=100"]
FROZEN = ["optim.lr=0.0", "trainer.max_steps=1"]  # a step that changes nothing: the starting weights


def test_t_init_decides_w_t_when_converting_a_vanilla_parent(env, tmp_path):
    parent = tmp_path / "parent"
    code, out = finetune([f"run_dir={parent}", *COMMON, "model.attention=vanilla", "trainer.max_steps=2"], env, REPO)
    assert code == 0, out
    children = {}
    for t_init in ("k_proj", "random"):
        child = tmp_path / t_init
        code, out = finetune([f"run_dir={child}", *COMMON, *FROZEN, "model.attention=slack", f"model.t_init={t_init}",
                              f"model.init_from={parent}", "seed=1"], env, REPO)
        assert code == 0, out
        children[t_init] = weights(child, 1)
    trained = weights(parent, 2)
    for name, value in trained.items():
        assert torch.equal(children["k_proj"][name], value), name
        assert torch.equal(children["random"][name], value) != name.endswith("self_attn.k_proj.weight"), name
    # Drawn with the model's initializer_range (0.02), not left at the parent's scale.
    w_t = children["random"]["model.layers.0.self_attn.k_proj.weight"]
    assert abs(w_t.std().item() - 0.02) < 0.005
