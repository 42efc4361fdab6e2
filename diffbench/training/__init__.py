"""Everything that trains weights: the zoo's recipes (``diffbench zoo train``) and DEX's conversion,
λ-annealed adaptation and folding (``diffbench dex``), both on the resumable checkpoints of
``checkpoints.py``."""
