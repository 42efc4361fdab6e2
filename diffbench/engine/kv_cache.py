"""A KV cache with its memory reserved up front, so growing and cropping it copy nothing.

transformers' DynamicCache grows by ``torch.cat``: feeding a 64K context in chunks copies the whole
cache once per chunk, and a cropped cache is copied again on the next append. Shared-prefix
execution crops back to the trunk after every sample, so here each layer owns one buffer sized for
the longest sequence of the run; ``update`` writes in place and returns views, ``crop`` only moves
the end. Peak memory is weights + one full-length cache, whatever the number of samples.
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import Cache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """One layer's keys and values in a preallocated [batch, kv_heads, capacity, head_dim] buffer."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
        import torch

        self.dtype, self.device = key_states.dtype, key_states.device
        batch, heads, _, _ = key_states.shape
        shape = (batch, heads, self.capacity, key_states.shape[-1])
        self.key_buffer = torch.empty(shape, dtype=key_states.dtype, device=key_states.device)
        self.value_buffer = torch.empty(
            (batch, heads, self.capacity, value_states.shape[-1]),
            dtype=value_states.dtype,
            device=self.device,
        )
        self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]
        self.is_initialized = True

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache holds {self.capacity} tokens; {end} were fed (reserve more)")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def fan_out(self, trunk: ReservedLayer, batch: int) -> None:
        """Become ``batch`` copies of ``trunk``'s cached tokens, so equal-length branches run as one batch."""
        import torch

        if self.is_initialized and self.key_buffer.shape[0] != batch:
            self.is_initialized = False  # reallocated below or by the next update, at the new batch size
        self.length = 0
        if trunk.is_initialized and trunk.length:
            key, value = trunk.key_buffer, trunk.value_buffer
            if not self.is_initialized:
                self.dtype, self.device = key.dtype, key.device
                self.key_buffer = torch.empty((batch, *key.shape[1:]), dtype=key.dtype, device=key.device)
                self.value_buffer = torch.empty(
                    (batch, *value.shape[1:]), dtype=value.dtype, device=key.device
                )
                self.is_initialized = True
            self.key_buffer[:, :, : trunk.length] = key[:, :, : trunk.length]
            self.value_buffer[:, :, : trunk.length] = value[:, :, : trunk.length]
            self.length = trunk.length
        if self.is_initialized:
            self.keys, self.values = (
                self.key_buffer[:, :, : self.length],
                self.value_buffer[:, :, : self.length],
            )

    def crop(self, tokens_to_remove: int) -> None:
        """Drop -tokens_to_remove tokens (transformers 5 passes negative counts); positive: keep that many."""
        self.keep(self.length + tokens_to_remove if tokens_to_remove <= 0 else tokens_to_remove)

    def keep(self, length: int) -> None:
        """Keep the first ``length`` tokens; the rest of the buffer is overwritten by later updates."""
        self.length = max(0, min(length, self.length))
        if self.is_initialized:
            self.keys = self.key_buffer[:, :, : self.length]
            self.values = self.value_buffer[:, :, : self.length]

    def reset(self) -> None:
        self.length = 0
        if self.is_initialized:
            self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]


class ReservedCache(Cache):
    """A Cache of ReservedLayers, one per decoder layer."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        self.reserved = [ReservedLayer(capacity) for _ in range(num_layers)]
        super().__init__(layers=list(self.reserved))
        self.capacity = capacity

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` cached tokens of every layer."""
        for layer in self.reserved:
            layer.keep(length)

    def fan_out(self, trunk: ReservedCache, batch: int) -> None:
        """Hold ``batch`` copies of ``trunk``'s cached tokens (buffers reused by the next batch)."""
        for mine, theirs in zip(self.reserved, trunk.reserved, strict=True):
            mine.fan_out(theirs, batch)


def reserved_cache_for(model: Any, capacity: int) -> ReservedCache:
    config = model.config.get_text_config(decoder=True)
    return ReservedCache(int(config.num_hidden_layers), capacity)
