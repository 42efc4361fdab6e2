"""The model_type names of diffbench's own architectures, a leaf both the model code and the registry
read (so neither imports the other to learn a name)."""

from __future__ import annotations

DIFF_V2_MODEL_TYPE = "diffbench_diff_v2"
