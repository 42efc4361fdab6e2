"""The one place that talks to transformers' KV-cache API, on every transformers version diffbench supports.

transformers renamed the cache argument of ``forward``, ``generate`` and the decoder layers from
``past_key_values`` to ``cache`` in 5.24 (the old name warns until 5.40 for forward and 6.0 for
generate, then disappears). A call that names the cache the wrong way does not fail: the model makes
a fresh cache of its own, every chunk after the first attends to itself only and positions restart,
so results drift silently. Every diffbench call that hands a model a cache goes through here; the name
is read off the model's own ``forward`` signature, so a model class that moves at its own pace works too.
"""

from __future__ import annotations

import inspect
from typing import Any

NEW_CACHE_KEYWORD = "cache"
OLD_CACHE_KEYWORD = "past_key_values"
# Names under which a decoder layer may hand an attention module its cache, newest first
# (``past_key_value`` is the transformers 4.x spelling).
LAYER_CACHE_KEYWORDS = (NEW_CACHE_KEYWORD, OLD_CACHE_KEYWORD, "past_key_value")


def cache_keyword(model: Any) -> str:
    """The keyword this model's ``forward`` (and so ``generate``) takes its KV cache under."""
    parameters = inspect.signature(type(model).forward).parameters  # tens of microseconds: no memo needed
    return NEW_CACHE_KEYWORD if NEW_CACHE_KEYWORD in parameters else OLD_CACHE_KEYWORD


def forward_with_cache(model: Any, input_ids: Any, cache: Any, **kwargs: Any) -> Any:
    """``model(input_ids, <cache>=cache, use_cache=True, **kwargs)`` under the name this model reads."""
    return model(input_ids=input_ids, use_cache=True, **{cache_keyword(model): cache}, **kwargs)


def generate_with_cache(model: Any, input_ids: Any, cache: Any, **kwargs: Any) -> Any:
    """``model.generate`` continuing from ``cache`` (which already holds all but the last prompt token)."""
    return model.generate(input_ids=input_ids, **{cache_keyword(model): cache}, **kwargs)


def new_dynamic_cache(model: Any) -> Any:
    """An empty transformers DynamicCache laid out for this model."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def output_cache(output: Any) -> Any:
    """The cache a forward pass returned, under whichever name its output class uses."""
    for name in (NEW_CACHE_KEYWORD, OLD_CACHE_KEYWORD):
        cache = getattr(output, name, None)
        if cache is not None:
            return cache
    return None


def pop_layer_cache(kwargs: dict[str, Any]) -> Any:
    """The cache a decoder layer passed to an attention module, removed from ``kwargs`` whatever its name.

    Removing every spelling keeps the attention kernel's own ``**kwargs`` free of a stale cache object.
    """
    found = None
    for name in LAYER_CACHE_KEYWORDS:
        value = kwargs.pop(name, None)
        if found is None and value is not None:
            found = value
    return found
