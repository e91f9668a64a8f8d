"""Attention distillation (train.distill): the parent's attention is the target of each CoCA layer."""
import torch

from tests.test_coca import tiny_model, token_batch
from train.coca import convert_to_coca
from train.trainer.distill import AttentionDistiller


def _batch(seq=16):
    ids = token_batch(seq=seq)
    return {"input_ids": ids, "position_ids": torch.arange(seq).expand_as(ids)}


def test_a_layer_still_computing_as_its_parent_has_zero_loss():
    # The same weights, run as vanilla: each layer's output is its parent's, so nothing to learn.
    model = convert_to_coca(tiny_model(), "vanilla").train()
    loss, value = AttentionDistiller(model).loss(model, _batch())
    assert value == 0.0 and loss.requires_grad


def test_training_w_t_alone_brings_coca_towards_the_parent():
    parent = tiny_model()
    model = convert_to_coca(tiny_model(), "slack", t_init="k_proj").train()
    distiller = AttentionDistiller(model)
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith("k_proj.weight"))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch = _batch()
    values = []
    for _ in range(30):
        loss, value = distiller.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        values.append(value)
    assert 0 < values[-1] < 0.5 * values[0]
    # Only W_t moved, and the parent's W_k, kept outside the model, did not follow it.
    for (name, trained), original in zip(model.named_parameters(), parent.parameters()):
        assert torch.equal(trained, original) != name.endswith("k_proj.weight"), name
    assert all(torch.equal(p.k_proj.weight, o.self_attn.k_proj.weight)
               for p, o in zip(distiller.parents, parent.model.layers))
    assert set(model.state_dict()) == set(parent.state_dict())


def test_evaluation_mode_runs_no_parent():
    model = convert_to_coca(tiny_model(), "exact").eval()
    distiller = AttentionDistiller(model)
    model(**_batch())
    assert distiller.losses == []
