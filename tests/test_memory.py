"""The up-front memory estimate refuses what clearly cannot fit and names what would."""
import pytest
from transformers import LlamaConfig

from train.parallel.memory import GIB, Setting, check_fits, estimate_bytes

LLAMA_7B = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       vocab_size=32000)
PARAMS_7B = 6_738_415_616
H100 = 80 * GIB


def test_the_papers_setting_fits_eight_gpus():
    # 8 x 2048 tokens per GPU, ZeRO-3 over 8 ranks, bf16, gradient checkpointing.
    check_fits(LLAMA_7B, PARAMS_7B, 2048, Setting(8, True, 3, False), world=8, half=True, device_bytes=H100)


def test_32k_without_checkpointing_is_refused_with_a_setting_that_fits():
    with pytest.raises(ValueError) as error:
        check_fits(LLAMA_7B, PARAMS_7B, 32768, Setting(8, False, 3, False), world=8, half=True, device_bytes=H100)
    message = str(error.value)
    assert message.startswith("data.seq_len=32768 needs about ")
    assert "this would fit: trainer.micro_batch_size=" in message and "model.gradient_checkpointing=true" in message
    assert "\n" not in message


def test_estimate_grows_linearly_in_seq_len_and_shrinks_with_zero():
    one = estimate_bytes(LLAMA_7B, PARAMS_7B, 4096, Setting(1, True, 3, False), 8, True)
    two = estimate_bytes(LLAMA_7B, PARAMS_7B, 8192, Setting(1, True, 3, False), 8, True)
    model_states = estimate_bytes(LLAMA_7B, PARAMS_7B, 0, Setting(1, True, 3, False), 8, True)
    assert two - model_states == pytest.approx(2 * (one - model_states))
    assert model_states == pytest.approx(16 * PARAMS_7B / 8)
    assert estimate_bytes(LLAMA_7B, PARAMS_7B, 0, Setting(1, True, 2, False), 8, True) > model_states


def test_tiling_is_advised_when_only_tiling_fits():
    # 7B at 128K tokens on one 80 GiB device: offloaded ZeRO-3 is not enough without tiling.
    offloaded = Setting(1, True, 3, True)
    with pytest.raises(ValueError, match="this would fit: .* trainer.tiled_mlp=true trainer.tiled_logits=true$"):
        check_fits(LLAMA_7B, PARAMS_7B, 131072, offloaded, world=1, half=True, device_bytes=H100)
    check_fits(LLAMA_7B, PARAMS_7B, 131072, Setting(1, True, 3, True, True, True), world=1, half=True,
               device_bytes=H100)


def test_tiles_bound_the_logits_and_mlp_whatever_the_length():
    tiled = Setting(1, True, 3, True, tiled_mlp=True, tiled_logits=True)
    untiled = Setting(1, True, 3, True)
    growth = {s: estimate_bytes(LLAMA_7B, PARAMS_7B, 65536, s, 1, True)
              - estimate_bytes(LLAMA_7B, PARAMS_7B, 32768, s, 1, True) for s in (tiled, untiled)}
    # Past the tile, only the per-token activations grow: checkpointed layer inputs, one layer's.
    per_token = 2 * (32 * 4096 + 10 * 4096 + 4096)
    assert growth[tiled] == pytest.approx(32768 * per_token)
    assert growth[untiled] > 1.8 * growth[tiled]
