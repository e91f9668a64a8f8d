"""Half precision: CoCA's attention in bf16 and fp16 against float64 (vanilla RoPE as the
yardstick), a tiny model forward and backward in fp16, and bf16 training against fp32."""
import re

import pytest
import torch

from bench import precision
from conf.schema import validate
from tests.runs import QUICK, REPO, finetune, losses
from tests.test_coca import tiny_config, tiny_model, token_batch
from tests.test_config import compose_config
from conf.errors import EXIT_BAD_INPUT
from train.coca import convert_to_coca
from train.diagnose import explain_non_finite

pytestmark = pytest.mark.usefixtures("one_thread")
FP16_MAX = torch.finfo(torch.float16).max


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("length", [1024, 8192])
@pytest.mark.parametrize("magnitude", [1, 32], ids=["no-outliers", "outliers-32"])
def test_coca_logit_error_is_within_2x_of_vanillas(dtype, length, magnitude):
    rows = {r.variant: r for r in precision.measure(dtype, length, magnitude, queries=64)}
    for variant in ("slack", "exact"):
        assert rows[variant].logit_error <= 2 * rows["vanilla"].logit_error, rows[variant]
        assert rows[variant].sdpa_finite and rows[variant].eager_finite


def test_fp16_stays_finite_where_q_squared_overflows():
    # Outliers of 256: |q|^2 passes 65504 in fp16, so a preparation in fp16 would hold inf.
    q = precision.draw(64, precision.HEADS, 256, torch.Generator().manual_seed(0))
    assert not q.half().square().isfinite().all()
    rows = precision.measure("fp16", 1024, 256, queries=64)
    for row in rows:
        assert row.sdpa_finite, row
        assert row.logit_error < 1e-3, row
    coca = [r for r in rows if r.variant != "vanilla"]
    assert all(r.max_logit > FP16_MAX and not r.eager_finite for r in coca)  # why eager is refused in fp16


def test_fp16_with_eager_attention_is_refused_for_coca_only():
    with pytest.raises(ValueError, match="trainer.precision=fp16 with model.attn_implementation=eager is refused "
                                         "for model.attention=slack"):
        validate(compose_config("trainer.precision=fp16", "model.attn_implementation=eager"))
    validate(compose_config("trainer.precision=fp16", "model.attn_implementation=eager", "model.attention=vanilla"))
    validate(compose_config("trainer.precision=fp16", "model.attn_implementation=sdpa"))


@pytest.mark.parametrize("variant", ["vanilla", "slack", "exact"])
def test_fp16_model_with_outlier_projections_is_finite_forward_and_backward(variant):
    """A GQA LLaMA whose q_proj/k_proj rows are scaled up into outlier channels, in fp16 on CPU."""
    model = convert_to_coca(tiny_model(config=tiny_config(kv_heads=2), dtype=torch.float32), variant)
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight[:2] *= 100  # the first two channels of the first head: |q| up to ~280
    ids = token_batch()
    reference = model(ids).logits.detach()
    half = model.half()
    with torch.no_grad():
        layer = half.model.layers[0]
        q = layer.self_attn.q_proj(layer.input_layernorm(half.model.embed_tokens(ids)))
    assert not q.square().isfinite().all()  # the outliers really pass fp16's range when squared
    out = half(ids, labels=ids)
    out.loss.backward()
    assert out.logits.isfinite().all() and out.loss.isfinite()
    assert all(p.grad.isfinite().all() for p in half.parameters() if p.grad is not None)
    error = (out.logits.float() - reference).norm() / reference.norm()
    assert error < 0.05, error


@pytest.mark.long
def test_half_precision_training_follows_fp32_and_fp16_is_refused_where_the_cpu_lacks_it(env, tmp_path):
    """bf16 trains on every CPU. fp16 trains where oneDNN has fp16 kernels (AVX512-FP16 or AMX-FP16,
    e.g. Intel Sapphire Rapids; DeepSpeed asks torch.ops.mkldnn), with DeepSpeed's loss scaling; on
    other CPUs (AMD EPYC, older Intel) it is refused at start-up in one line."""
    import deepspeed

    fp16 = deepspeed.get_accelerator().is_fp16_supported()
    sweep = tmp_path / "sweep"
    code, out = finetune(["-m", "model.attention=slack,exact", "trainer.precision=fp32,bf16,fp16",
                          f"hydra.sweep.dir={sweep}", *QUICK, "trainer.max_steps=100", "trainer.save_every=100",
                          "trainer.eval_every=100", "logger.mode=disabled"], env, REPO)
    refusal = "trainer.precision=fp16 is not supported on this device (cpu); choose one of fp32, bf16"
    assert code == (0 if fp16 else EXIT_BAD_INPUT), out
    assert out.count(refusal) == (0 if fp16 else 2)
    # job numbers: slack then exact, fp32/bf16/fp16 each
    for fp32, half_job in ((0, 1), (3, 4)) + (((0, 2), (3, 5)) if fp16 else ()):
        full, half = losses(sweep / f"{fp32}-tiny"), losses(sweep / f"{half_job}-tiny")
        assert sorted(full) == sorted(half) == list(range(1, 101))
        gaps = [abs(full[s] - half[s]) for s in full]
        assert max(gaps) < 0.01, max(gaps)  # measured: 0.0009 at most (bf16, slack), on a loss going 6.25 -> 5.46
        assert max(gaps) > 0  # half precision really ran
        assert full[100] < full[1] - 0.5


def _outlier_query_model(variant: str, magnitude: float):
    """A GQA LLaMA with head_dim 64 (4 heads of 64, 2 KV heads) whose first RoPE slice of the
    first query head is scaled until its largest |q_j| on token_batch() reaches `magnitude`."""
    model = convert_to_coca(tiny_model(config=tiny_config(hidden_size=256, intermediate_size=128, kv_heads=2),
                                       dtype=torch.float32), variant)
    layer = model.model.layers[0]
    with torch.no_grad():
        hidden = layer.input_layernorm(model.model.embed_tokens(token_batch()))
        q = layer.self_attn.q_proj(hidden)
        largest = (q[..., 0].square() + q[..., 32].square()).sqrt().max()  # slice 0 pairs dims 0 and 32
        layer.self_attn.q_proj.weight[[0, 32]] *= magnitude / largest
    return model


def test_fp16_coca_holds_queries_that_overflowed_before_and_names_the_layer_where_it_cannot():
    """|q_j| = 782 at head_dim 64 used to overflow slack's Q' (q^2 x the softmax scale = 76,000 >
    65,504) and turn the logits NaN; the factor moved to K' holds it, exactly as fp32 computes."""
    for variant in ("vanilla", "slack", "exact"):
        model = _outlier_query_model(variant, 782.0)
        reference = model(token_batch()).logits.detach()
        with torch.no_grad():
            half = model.half()(token_batch()).logits.float()
        assert half.isfinite().all(), variant
        assert ((half - reference).norm() / reference.norm()) < 0.02, variant
    # Far beyond: a forward in fp16 is no longer finite, and the diagnosis names layer and magnitude.
    model = _outlier_query_model("slack", 6000.0).half()
    with torch.no_grad():
        assert not model(token_batch()).logits.isfinite().all()
    cause = explain_non_finite(model, {"input_ids": token_batch()})
    assert re.match(r"attention layer 0 \(slack\): CoCA's Q' overflows float16: the largest \|q_j\| is (5,99\d|6,00\d) "
                    r"\(float16 holds \|q_j\| up to ~2,896", cause), cause
