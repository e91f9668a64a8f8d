"""Converting a vanilla parent to CoCA one layer at a time (`trainer.layerwise_conversion_steps`).

Switching every attention layer at once hands the model all of its new attention in one step.
Here the layers switch from vanilla RoPE (with W_t still holding the parent's W_k, t_init=k_proj)
to the run's variant one by one, bottom first, at even intervals over the first
`layerwise_conversion_steps` steps; the rest of the run trains plain CoCA. Which layers have
switched follows from the step alone, so a resumed run switches exactly as the uninterrupted
one. A checkpoint saved before every layer has switched records how many have
(`coca_partial_layers` in its config.json): the loaders refuse it, since its config's variant
does not describe all of its layers.
"""
from __future__ import annotations

from torch import nn

from train.coca import CocaAttention

PARTIAL_KEY = "coca_partial_layers"


class LayerwiseConversion:
    def __init__(self, model: nn.Module, steps: int):
        self.model, self.steps = model, steps
        self.layers = [m for m in model.modules() if isinstance(m, CocaAttention)]
        self.target = self.layers[0].variant

    def switched(self, step: int) -> int:
        """How many layers run the target variant during optimizer step `step` + 1."""
        return min(len(self.layers), step * len(self.layers) // self.steps + 1)

    def apply(self, step: int) -> None:
        """Set every layer's variant for the next optimizer step, and the config a save would record."""
        switched = self.switched(step)
        for index, layer in enumerate(self.layers):
            layer.variant = self.target if index < switched else "vanilla"
        if switched < len(self.layers):
            setattr(self.model.config, PARTIAL_KEY, switched)
        elif hasattr(self.model.config, PARTIAL_KEY):
            delattr(self.model.config, PARTIAL_KEY)
