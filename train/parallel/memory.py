"""A rough per-device memory estimate, to refuse a run that clearly cannot fit before it loads.

Model states follow the ZeRO paper (per parameter: 2 or 4 bytes of weights and of gradients,
12 bytes of fp32 master weights and Adam moments under mixed precision, 8 in fp32; stages
1/2/3 partition optimizer states / + gradients / + weights over the data-parallel ranks;
offload moves them to the host). Activations assume an O(N) attention kernel (no N x N
scores): per token and layer about 10 hidden-size and 4 MLP-size tensors are kept, or
only the layer input under gradient checkpointing (plus one layer recomputed). The logits
and their fp32 loss copies add 3 x vocab floats per token. Tiling (train.parallel.tiling) keeps the MLP
intermediates and the logits of one tile only (hidden_size tokens unless set).
"""
from __future__ import annotations

import dataclasses
from conf.errors import BadInput

GIB = 2**30
# Over this many times the device's memory, the run "clearly" cannot fit: the estimate is rough.
MARGIN = 1.2


@dataclasses.dataclass(frozen=True)
class Setting:
    micro_batch_size: int
    gradient_checkpointing: bool
    zero_stage: int
    offload: bool
    tiled_mlp: bool = False
    tiled_logits: bool = False
    tile_tokens: int | None = None  # None: hidden_size

    def overrides(self) -> str:
        deepspeed = "zero3_offload" if self.offload else f"zero{self.zero_stage}"
        text = (f"trainer.micro_batch_size={self.micro_batch_size} "
                f"model.gradient_checkpointing={str(self.gradient_checkpointing).lower()} deepspeed={deepspeed}")
        tiled = [f"trainer.tiled_{part}=true" for part in ("mlp", "logits") if getattr(self, f"tiled_{part}")]
        return " ".join([text, *tiled])


def estimate_bytes(model_config, num_params: int, seq_len: int, setting: Setting, world: int, half: bool) -> float:
    weight_bytes = 2 if half else 4
    states = {"weights": weight_bytes, "grads": weight_bytes, "optimizer": 12 if half else 8}
    partitioned = {1: ("optimizer",), 2: ("optimizer", "grads"), 3: ("optimizer", "grads", "weights")}
    model_bytes = 0.0
    for name, per_param in states.items():
        if setting.offload and name in ("weights", "optimizer"):
            continue
        share = world if name in partitioned.get(setting.zero_stage, ()) else 1
        model_bytes += per_param * num_params / share

    h, mlp, layers = model_config.hidden_size, model_config.intermediate_size, model_config.num_hidden_layers
    tokens = setting.micro_batch_size * seq_len
    tile = min(tokens, setting.tile_tokens or h)
    # a tiled MLP keeps its input for the backward, and one tile's intermediates at a time
    mlp_bytes = weight_bytes * (h * tokens + 4 * mlp * tile) if setting.tiled_mlp else weight_bytes * 4 * mlp * tokens
    full_layer = weight_bytes * 10 * h * tokens + mlp_bytes
    if setting.gradient_checkpointing:
        activations = weight_bytes * h * tokens * layers + full_layer
    else:
        activations = full_layer * layers
    logits = (weight_bytes + 8) * model_config.vocab_size * (tile if setting.tiled_logits else tokens)
    return model_bytes + activations + logits


def check_fits(model_config, num_params: int, seq_len: int, setting: Setting, world: int, half: bool,
               device_bytes: float) -> None:
    """ValueError naming the estimate and, if there is one, a setting that would fit."""
    need = estimate_bytes(model_config, num_params, seq_len, setting, world, half)
    if need <= MARGIN * device_bytes:
        return
    candidates = [
        Setting(mb, True, stage, offload, setting.tiled_mlp or tiled, setting.tiled_logits or tiled,
                setting.tile_tokens)
        for tiled in (False, True)
        for offload, stage in ((False, setting.zero_stage), (False, 3), (True, 3))
        for mb in range(setting.micro_batch_size, 0, -1)
    ]
    fits = next((c for c in candidates if estimate_bytes(model_config, num_params, seq_len, c, world, half)
                 <= device_bytes), None)
    advice = f"; this would fit: {fits.overrides()}" if fits else "; nothing fits one device: raise the world size"
    raise BadInput(
        f"data.seq_len={seq_len} needs about {need / GIB:.0f} GiB per device with {setting.overrides()} on "
        f"{world} rank(s), but the device has {device_bytes / GIB:.0f} GiB{advice}"
    )
