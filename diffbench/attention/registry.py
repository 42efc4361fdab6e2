"""Make diffbench's own architectures loadable by transformers' Auto classes.

Checkpoints of diffbench's variants are ordinary checkpoint directories whose config.json names a
model_type transformers does not ship. Registering the classes once, before any config is read,
lets ``AutoConfig`` / ``AutoModelForCausalLM.from_pretrained(directory)`` load them like any other
model, with no ``trust_remote_code`` and no code copied into the checkpoint.
"""

from __future__ import annotations

from diffbench.attention.model_types import DIFF_V2_MODEL_TYPE


def register_diffbench_models() -> None:
    """Register Diff V2 with AutoConfig, AutoModel and AutoModelForCausalLM; safe to call repeatedly."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from diffbench.attention.diff_v2 import DiffV2Config, DiffV2ForCausalLM, DiffV2Model

    AutoConfig.register(DIFF_V2_MODEL_TYPE, DiffV2Config, exist_ok=True)
    AutoModel.register(DiffV2Config, DiffV2Model, exist_ok=True)
    AutoModelForCausalLM.register(DiffV2Config, DiffV2ForCausalLM, exist_ok=True)
