"""Tiled MLP and tiled logits+loss compute the same loss and gradients as the untiled model."""
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from data.packing import IGNORE_INDEX
from tests.runs import PER_SEQUENCE as COMMON, REPO, assert_same_weights, finetune, records
from train.parallel import tiling
from train.coca import convert_to_coca
from train.trainer.loss import cross_entropy_sum, shift_labels, tiled_cross_entropy_sum


@pytest.mark.parametrize("count,sizes", [(4, (6,)), (3, (64, 128)), (7, (23, 23)), (2, (4099, 8198)), (5, (1,))])
def test_tile_counts_are_ones_torch_chunk_honours(count, sizes):
    tiles = tiling._chunkable(count, *sizes)
    assert 1 <= tiles <= count
    for size in sizes:
        if size >= tiles:
            assert len(torch.arange(size).chunk(tiles)) == tiles


def loss_and_grads(model, input_ids, labels, tile_tokens=None):
    """The mean next-token loss and every parameter's gradient; tiled when tile_tokens is given."""
    model.zero_grad()
    shifted = shift_labels(labels)
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    if tile_tokens is None:
        total = cross_entropy_sum(model(input_ids=input_ids, position_ids=positions).logits, shifted)
    else:
        hidden = model.get_decoder()(input_ids=input_ids, position_ids=positions).last_hidden_state
        total = tiled_cross_entropy_sum(model.get_output_embeddings(), hidden, shifted, tile_tokens)
    loss = total / (shifted != IGNORE_INDEX).sum()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_tiled_mlp_and_logits_match_the_untiled_model(checkpointing):
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=101, max_position_embeddings=64, initializer_range=0.2)
    model = convert_to_coca(LlamaForCausalLM(config).double(), variant="slack")
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    input_ids = torch.randint(0, config.vocab_size, (2, 30))
    labels = input_ids.clone()
    labels[0, 11] = labels[1, 3:6] = IGNORE_INDEX  # masked document boundaries
    expected_loss, expected = loss_and_grads(model, input_ids, labels)

    tiling.tile_mlps(model, tile_tokens=7)  # 30 tokens in uneven tiles
    loss, grads = loss_and_grads(model, input_ids, labels, tile_tokens=7)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=1e-12)
    assert grads.keys() == expected.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-10, atol=1e-12, msg=name)
    # The state dict is untouched: a tiled run's checkpoints load into an untiled model.
    assert set(model.state_dict()) == set(LlamaForCausalLM(config).state_dict())


def test_tiled_logits_backpropagate_later_scales_into_lm_head():
    """A loss scaled after the tiled sum (token count, gradient accumulation) scales lm_head's gradient too."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 13, bias=False).double()
    hidden = torch.randn(1, 10, 8, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 13, (1, 10))
    grads = []
    for tile in (None, 3):
        head.zero_grad()
        total = cross_entropy_sum(head(hidden), labels) if tile is None else tiled_cross_entropy_sum(head, hidden,
                                                                                                   labels, tile)
        (total * 0.125).backward()
        grads.append(head.weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-14)


# 32 tokens per rank: 2 tiles of each
TILED = ["trainer.tiled_mlp=true", "trainer.tiled_logits=true", "trainer.tile_tokens=20"]


@pytest.mark.long
@pytest.mark.parametrize("stage", [2, 3])
def test_tiled_training_on_two_ranks_per_sequence_matches_untiled_on_one(env, tmp_path, stage, shared_run):
    """Tiling, ZeRO's gradient hooks and Ulysses together: the same losses and gradient norms."""
    common = [*COMMON, f"deepspeed=zero{stage}", "model.attention=slack"]
    # The untiled reference: one rank, each sequence whole, two micro-batches per step.
    untiled = shared_run(*common, "trainer.grad_accum=2")
    code, out = finetune([f"run_dir={tmp_path / 'tiled'}", *common, "trainer.grad_accum=1",
                          "trainer.sequence_parallel_size=2", *TILED], env, REPO, nproc=2)
    assert code == 0, out
    expected, got = records(untiled), records(tmp_path / "tiled")
    for key in ("loss", "grad_norm", "val_loss"):
        want = [r[key] for r in expected if key in r]
        assert len(want) >= 2 and all(math.isfinite(v) for v in want)
        torch.testing.assert_close(torch.tensor([r[key] for r in got if key in r]), torch.tensor(want),
                                   rtol=1e-5, atol=1e-5, msg=key)
    assert_same_weights(tmp_path / "tiled", untiled, step=4)
