"""Where attention goes at the positions that produce the answer, without materialising attention maps.

The Diff paper's Table 3 asks how much of the attention that produces an answer lands on the answer
span and how much on noise. Only a few query rows matter: the last prompt token and the teacher-forced
answer positions (prompt + answer[:-1], its last len(answer) rows). A full map over a 64K context is
64K × 64K per head; those rows against all keys are len(answer) × 64K, and the softmax over the keys
is taken in chunks of keys in two passes (log-sum-exp first, then probabilities), so even the rows'
scores are never held whole.

How the rows' queries and every key are obtained: the context is prefilled in chunks into a KV cache,
then the answer rows run as the last step through ``diffbench_capture``, an attention function that
calls SDPA and keeps the query and key tensors each layer passes to it. Those are exactly what the model
attends with (RoPE applied, any q/k norm applied, the model's own scaling), for any layout of heads.

Per map, per head, the mass of each row falls into key regions that partition the sequence:

    sink      the first ``SINK_TOKENS`` tokens (where models park attention)
    prefix    the rest of what precedes the haystack (template, instruction)
    noise     the haystack without the needle
    needle    the needle sentence; ``answer`` is its answer tokens, reported again on their own
    question  everything after the haystack: question, template, answer prefix, answer tokens so far
    distractor  a character needle's distractor sentence (``niah --distractor``), taken out of the
              noise; null on samples that have none

Maps per variant (a map's rows sum to 1 when it is a softmax):
- baseline, DEX: each query head's softmax map. DEX leaves the maps unchanged and acts on the value
  side, so its records add the relative norm ||λ·f_D(O_h)|| / ||O_h|| of each head's output O_h.
- diff: the positive and negative softmax maps of each differential head and the net map
  positive − λ·negative. A net region's share is its signed mass over the row's absolute mass Σ|net|:
  where the net row is non-negative that is mass / (1 − λ), the paper's normalised attention score, and
  it stays bounded in [−1, 1] where 1 − λ nears 0 (V2's λ = sigmoid(·) can; V1's λ can pass 1).
  ``negative_share`` is the net row's negative mass over its absolute mass N / (P + N), so the net
  shares of a row sum to 1 − 2·negative_share.
  V1 (DiffLlama) pairs query heads j and j + H/2 with one λ per layer; V2 pairs 2i and 2i + 1 with
  λ = sigmoid(x W_λ) per row.

Lookback Lens's ratio (``halluc --attn``) comes from the same chunks: per row, the mean mass on the
context keys against the mean on the newer keys (``lookback_ratios``).

Head redundancy (the DEX paper's measure) is the mean pairwise cosine distance between the heads' rows
(the net maps for diff), and each head's entropy is that of its softmax row, both averaged over rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from diffbench.cache_api import forward_with_cache
from diffbench.errors import UsageError
from diffbench.haystack.fit import answer_span

SINK_TOKENS = 4
CATEGORIES = ("sink", "prefix", "noise", "needle", "answer", "question", "distractor")  # key labels 0..6
PARTITION = ("sink", "prefix", "noise", "needle", "question", "distractor")  # needle holds answer: sum 1
CAPTURE_ATTENTION = "diffbench_capture"
CAPTURE_SLOT = "_diffbench_capture"
DEFAULT_KEY_CHUNK = 8192
DEFAULT_PREFILL_CHUNK = 4096


# ---------------------------------------------------------------------------------------------------
# Key regions of a sample
# ---------------------------------------------------------------------------------------------------


Span = tuple[int, int]


def key_labels(
    length: int,
    needle_span: Span | list[Span],
    haystack_span: Span,
    answer: Span | list[Span],
    sinks: int = SINK_TOKENS,
    distractors: list[Span] | None = None,
) -> Any:
    """Region index (into CATEGORIES) of each of ``length`` key positions; earlier rules give way to later.

    A multi-needle sample passes a list of spans: its asked needles and their answers (the unasked
    needles stay in the noise, which is what they are to the question). ``distractors``: the spans of a
    character needle's distractor sentences, which the question matches word for word.
    """
    import torch

    labels = torch.full((length,), CATEGORIES.index("prefix"), dtype=torch.long)
    labels[haystack_span[0] : haystack_span[1]] = CATEGORIES.index("noise")
    labels[haystack_span[1] :] = CATEGORIES.index("question")
    for start, end in distractors or []:
        labels[start:end] = CATEGORIES.index("distractor")
    for start, end in _span_list(needle_span):
        labels[start:end] = CATEGORIES.index("needle")
    for start, end in _span_list(answer):
        labels[start:end] = CATEGORIES.index("answer")
    labels[:sinks] = CATEGORIES.index("sink")
    return labels


def _span_list(spans: Span | list[Span]) -> list[Span]:
    """One span, or a list of them, as a list of spans."""
    if isinstance(spans, tuple):
        return [spans]
    return [(int(start), int(end)) for start, end in spans]


# ---------------------------------------------------------------------------------------------------
# Capturing each layer's queries and keys for the answer rows
# ---------------------------------------------------------------------------------------------------


@dataclass
class LayerCapture:
    """What one layer's attention call saw for the answer rows (batch of one)."""

    layer: int
    module: Any
    query: Any = None  # (H_q, R, d): the rows' queries, rotated
    key: Any = None  # (H_kv, S, d): every key of the sequence, rotated (a view of the KV cache)
    scaling: float = 0.0
    output: Any = None  # (R, H_q, d_v): the attention output per head, before o_proj (DEX's O_h)
    lambda_rows: Any = None  # Diff V2: (h, R) λ of each output head at each row
    extras: dict[str, Any] = field(default_factory=dict)
    first_position: int | None = None  # the rows' first position; None: the sequence's last R positions

    def rows(self, start: int, stop: int) -> LayerCapture:
        """The same layer seen from rows [start, stop) only (the key and the module are shared)."""
        first = int(_row_positions(self)[start])
        return LayerCapture(
            layer=self.layer,
            module=self.module,
            query=self.query[:, start:stop],
            key=self.key,
            scaling=self.scaling,
            output=None if self.output is None else self.output[start:stop],
            lambda_rows=None if self.lambda_rows is None else self.lambda_rows[:, start:stop],
            extras=self.extras,
            first_position=first,
        )


def capture_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """SDPA, keeping the first call's query, key and output on the module's slot (DiffLlama calls twice)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    output, weights = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )
    slot = getattr(module, CAPTURE_SLOT, None)
    if isinstance(slot, LayerCapture) and slot.query is None:
        slot.query = query[0].detach()
        slot.key = key[0].detach()
        slot.scaling = float(scaling if scaling is not None else query.shape[-1] ** -0.5)
        slot.output = output[0].detach()
    return output, weights


def register_capture_attention() -> str:
    """Register ``diffbench_capture`` with SDPA's mask function (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CAPTURE_ATTENTION, capture_attention_forward)
    AttentionMaskInterface.register(CAPTURE_ATTENTION, sdpa_mask)
    return CAPTURE_ATTENTION


def attention_layers(model: Any) -> list[Any]:
    """Each decoder layer's attention module (Llama-style ``layers[i].self_attn``)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    modules = [getattr(layer, "self_attn", None) for layer in layers] if layers is not None else []
    if not modules or any(module is None for module in modules):
        model_type = getattr(getattr(model, "config", None), "model_type", "?")
        raise UsageError(
            f"diffbench attn needs Llama-style attention (layers[i].self_attn, e.g. Llama, Qwen2, Mistral, "
            f"DiffLlama); a {model_type!r} model has none"
        )
    return modules


@contextlib.contextmanager
def capturing(model: Any) -> Iterator[list[LayerCapture]]:
    """Within the block, every layer's attention goes through ``diffbench_capture`` and fills a capture."""
    import torch

    modules = attention_layers(model)
    captures = [LayerCapture(layer=index, module=module) for index, module in enumerate(modules)]
    hooks = []
    for capture, module in zip(captures, modules, strict=True):
        setattr(module, CAPTURE_SLOT, capture)
        projection = getattr(module, "lambda_proj", None)  # Diff V2: λ = sigmoid(x W_λ) per token and head
        if isinstance(projection, torch.nn.Linear):
            hooks.append(projection.register_forward_hook(_lambda_hook(capture)))
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = register_capture_attention()
    try:
        yield captures
    finally:
        config._attn_implementation = previous
        for hook in hooks:
            hook.remove()
        for module in modules:
            with contextlib.suppress(AttributeError):
                delattr(module, CAPTURE_SLOT)


def _lambda_hook(capture: LayerCapture) -> Any:
    def hook(module: Any, args: Any, output: Any) -> None:
        capture.lambda_rows = output[0].detach().float().sigmoid().T  # (B, R, h) → (h, R)

    return hook


@dataclass
class RowCapture:
    """The captures of every layer and the logits of the answer rows."""

    layers: list[LayerCapture]
    logits: Any  # (R, vocab)
    sequence_length: int


class SharedContext:
    """One model's KV cache carried from unit to unit of an attention pass: a unit prefills only the tokens
    after what its sequence shares with the one before (niah prompts read one haystack stream, so they
    share it up to their needle; ``shared_order`` puts units that share most side by side).

    The keys and values of the shared tokens are the ones the same tokens gave before, so the rows
    read the same attention (to float rounding at other chunk boundaries; tested).
    """

    def __init__(self, model: Any, capacity: int, prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> None:
        from diffbench.engine.kv_cache import reserved_cache_for

        self.model = model
        self.cache = reserved_cache_for(model, capacity)
        self.prefill_chunk = prefill_chunk
        self.ids: list[int] = []  # the tokens whose keys and values the cache holds
        self.reused = 0  # tokens not prefilled again, over the pass
        self.prefilled = 0

    def fill(self, context: list[int]) -> Any:
        """Make the cache hold exactly ``context``, prefilling only what it does not share; its ids tensor."""
        import torch

        shared = common_prefix_length(self.ids, context)
        self.cache.truncate(shared)
        device = next(self.model.parameters()).device
        ids = torch.tensor([context], device=device)
        with torch.inference_mode():
            for start in range(shared, len(context), self.prefill_chunk):
                stop = min(start + self.prefill_chunk, len(context))
                forward_with_cache(self.model, ids[:, start:stop], self.cache, logits_to_keep=1)
        self.reused += shared
        self.prefilled += len(context) - shared
        self.ids = list(context)
        return ids


def common_prefix_length(first: list[int], second: list[int]) -> int:
    for index, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return index
    return min(len(first), len(second))


def shared_order(units: list[Any], sequence_of: Any) -> list[Any]:
    """Units in the lexicographic order of their token sequences: neighbours share the longest prefixes."""
    return sorted(units, key=lambda unit: list(sequence_of(unit)))


def capture_rows(
    model: Any,
    sequence: list[int],
    rows: int,
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    shared: SharedContext | None = None,
) -> RowCapture:
    """Prefill all but the last ``rows`` tokens in chunks (only what ``shared`` does not hold already),
    then run those rows through the capture."""
    import torch

    if not 0 < rows <= len(sequence):
        raise ValueError(f"{rows} answer rows do not fit a sequence of {len(sequence)} tokens")
    shared = shared or SharedContext(model, len(sequence), prefill_chunk)
    context = len(sequence) - rows
    shared.fill(sequence[:context])
    ids = torch.tensor([sequence[context:]], device=next(model.parameters()).device)
    with torch.inference_mode():
        with capturing(model) as captures:
            logits = forward_with_cache(model, ids, shared.cache, logits_to_keep=rows).logits[0]
        shared.ids = list(sequence)  # the rows' keys and values are in the cache now too
    for capture in captures:
        if capture.query is None:
            raise UsageError(
                f"layer {capture.layer}'s attention does not go through transformers' attention interface, "
                "so diffbench attn cannot read its queries and keys"
            )
        if capture.key.shape[-2] != len(sequence):
            raise UsageError(
                f"layer {capture.layer} keeps {capture.key.shape[-2]} of {len(sequence)} keys "
                "(sliding-window attention); diffbench attn needs full causal attention"
            )
    return RowCapture(layers=captures, logits=logits, sequence_length=len(sequence))


# ---------------------------------------------------------------------------------------------------
# The softmax over all keys, chunk by chunk
# ---------------------------------------------------------------------------------------------------


def _scores(query: Any, key: Any, positions: Any, scaling: float, start: int, stop: int) -> Any:
    """Scaled, causally masked scores of every query head's rows against keys [start, stop): (H_q, R, C).

    Query head h reads KV head h // (H_q / H_kv) (transformers' repeat_kv), so the g query heads of a
    group are stacked as g·R rows against their one KV head: no key is repeated.
    """
    import torch

    heads, rows, dim = query.shape
    kv_heads = key.shape[0]
    group = heads // kv_heads
    stacked = query.float().reshape(kv_heads, group * rows, dim)
    scores = torch.bmm(stacked, key[:, start:stop].float().transpose(1, 2)) * scaling
    scores = scores.reshape(heads, rows, stop - start)
    future = torch.arange(start, stop, device=key.device)[None, :] > positions[:, None]  # (R, C)
    return scores.masked_fill(future, float("-inf"))


def probability_chunks(
    query: Any, key: Any, positions: Any, scaling: float, key_chunk: int = DEFAULT_KEY_CHUNK
) -> Iterator[tuple[int, Any, Any]]:
    """(start, p, log p) per chunk of keys, p: (H_q, R, C) = softmax over all keys, two passes.

    Pass one accumulates each row's log-sum-exp over the chunks; pass two recomputes the chunk's scores
    and normalises them. Masked (future) keys have p = 0 and log p = 0, so p·log p sums safely.
    """
    import torch

    length = key.shape[1]
    lse = torch.full(query.shape[:2], float("-inf"), device=key.device)
    for start in range(0, length, key_chunk):
        lse = torch.logaddexp(
            lse, _scores(query, key, positions, scaling, start, min(start + key_chunk, length)).logsumexp(-1)
        )
    for start in range(0, length, key_chunk):
        scores = _scores(query, key, positions, scaling, start, min(start + key_chunk, length))
        logp = scores - lse[..., None]
        masked = torch.isinf(scores)
        yield start, logp.exp().masked_fill(masked, 0.0), logp.masked_fill(masked, 0.0)


def row_probabilities(capture: LayerCapture, key_chunk: int = DEFAULT_KEY_CHUNK) -> Any:
    """Full rows (H_q, R, S) from the chunks: for tests and small contexts only."""
    import torch

    positions = _row_positions(capture)
    chunks = [
        p for _, p, _ in probability_chunks(capture.query, capture.key, positions, capture.scaling, key_chunk)
    ]
    return torch.cat(chunks, dim=-1)


def _row_positions(capture: LayerCapture) -> Any:
    """The rows are the sequence's last R positions, unless the capture was cut to some of them."""
    import torch

    length, rows = capture.key.shape[1], capture.query.shape[1]
    first = length - rows if capture.first_position is None else capture.first_position
    return torch.arange(first, first + rows, device=capture.key.device)


# ---------------------------------------------------------------------------------------------------
# Per-head statistics of one layer
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairing:
    """How query heads make output heads: each its own (softmax), or positive/negative pairs (diff)."""

    kind: str  # "softmax" or "diff"
    positive: list[int]
    negative: list[int] = field(default_factory=list)


def pairing_for(capture: LayerCapture, variant: str, version: str | None) -> Pairing:
    """The head layout of a layer: V1 pairs j with j + H/2 (DiffLlama), V2 pairs 2i with 2i + 1."""
    heads = int(capture.query.shape[0])
    if variant != "diff":
        return Pairing("softmax", list(range(heads)))
    if version == "v1":
        half = heads // 2
        return Pairing("diff", list(range(half)), list(range(half, heads)))
    if version == "v2":
        return Pairing("diff", list(range(0, heads, 2)), list(range(1, heads, 2)))
    raise UsageError(f"unknown Differential Transformer version {version!r}: diffbench knows v1 and v2")


def diff_lambda(capture: LayerCapture, pairing: Pairing, version: str | None) -> Any:
    """λ of each differential head at each row, (H_d, R): V1 one scalar per layer, V2 per head and row."""

    rows = capture.query.shape[1]
    count = len(pairing.positive)
    if version == "v2":
        if capture.lambda_rows is None:
            raise UsageError(f"layer {capture.layer}: Diff V2 attention without lambda_proj")
        return capture.lambda_rows.reshape(count, rows)
    from diffbench.attention.reference import v1_lambda

    return v1_lambda(capture.module).detach().float().expand(count, rows)


@dataclass
class _Accumulator:
    """Running sums over key chunks; all (heads, rows, ...) float32."""

    mass: Any  # (H_q, R, |CATEGORIES|) per query-head softmax map
    entropy: Any  # (H_q, R)
    gram: Any  # (R, H', H') of the primary maps (softmax, or net for diff)
    net_mass: Any = None  # (H_d, R, |CATEGORIES|)
    net_negative: Any = None  # (H_d, R)
    net_absolute: Any = None  # (H_d, R)


def layer_head_records(
    capture: LayerCapture,
    labels: Any,
    variant: str,
    version: str | None = None,
    key_chunk: int = DEFAULT_KEY_CHUNK,
) -> list[dict[str, Any]]:
    """One plain-JSON dict per output head of the layer: region shares, entropy, redundancy, extras."""
    import torch

    pairing = pairing_for(capture, variant, version)
    heads, rows = int(capture.query.shape[0]), int(capture.query.shape[1])
    kinds = len(CATEGORIES)
    device = capture.key.device
    labels = labels.to(device)
    lam = diff_lambda(capture, pairing, version) if pairing.kind == "diff" else None
    primary = len(pairing.positive)
    acc = _Accumulator(
        mass=torch.zeros(heads, rows, kinds, device=device),
        entropy=torch.zeros(heads, rows, device=device),
        gram=torch.zeros(rows, primary, primary, device=device),
    )
    if lam is not None:
        acc.net_mass = torch.zeros(primary, rows, kinds, device=device)
        acc.net_negative = torch.zeros(primary, rows, device=device)
        acc.net_absolute = torch.zeros(primary, rows, device=device)
    positions = _row_positions(capture)
    for start, p, logp in probability_chunks(
        capture.query, capture.key, positions, capture.scaling, key_chunk
    ):
        chunk_labels = labels[start : start + p.shape[-1]]
        acc.mass.index_add_(2, chunk_labels, p)
        acc.entropy -= (p * logp).sum(-1)
        maps = p
        if lam is not None:
            maps = p[pairing.positive] - lam[..., None] * p[pairing.negative]  # the net maps (H_d, R, C)
            acc.net_mass.index_add_(2, chunk_labels, maps)
            acc.net_negative += (-maps).clamp(min=0.0).sum(-1)
            acc.net_absolute += maps.abs().sum(-1)
        acc.gram += torch.einsum("hrc,grc->rhg", maps, maps)
    redundancy = _redundancy(acc.gram)  # (H',)
    no_distractor = not bool((labels == CATEGORIES.index("distractor")).any())
    group = heads // int(capture.key.shape[0])
    records = []
    for index, head in enumerate(pairing.positive):
        record: dict[str, Any] = {"layer": capture.layer, "head": index, "kv_head": head // group}
        if lam is None:
            record["map"] = "softmax"
            record.update(_shares(acc.mass[head]))
            record["entropy"] = _mean(acc.entropy[head])
        else:
            negative = pairing.negative[index]
            absolute = acc.net_absolute[index].clamp(min=1e-30)[:, None]  # (R, 1)
            record["map"] = "net"
            record.update(_shares(acc.net_mass[index] / absolute))
            record.update(_shares(acc.mass[head], "pos_"))
            record.update(_shares(acc.mass[negative], "neg_"))
            record["negative_share"] = _mean(acc.net_negative[index] / acc.net_absolute[index])
            record["lambda"] = _mean(lam[index])
            record["entropy"] = _mean(acc.entropy[head])
            record["neg_entropy"] = _mean(acc.entropy[negative])
            record["query_heads"] = [head, negative]
        record["redundancy"] = None if primary < 2 else float(redundancy[index])
        if no_distractor:  # no such region: null, left out of means (not a share of 0)
            record.update({key: None for key in record if key.endswith("distractor")})
        records.append(record)
    dex = getattr(capture.module, "dex", None)
    if dex is not None and lam is None:
        for record, relative in zip(records, dex_relative_norms(capture), strict=True):
            record["dex_selected"] = record["head"] in dex.heads
            record["dex_lambda"] = float(dex.lambda_value().detach())
            record["dex_relative_norm"] = relative
    return records


def _shares(mass: Any, prefix: str = "") -> dict[str, float]:
    """Mean over rows of each region's mass (R, |CATEGORIES|); ``needle`` includes the answer tokens."""
    per_row = {name: mass[:, i] for i, name in enumerate(CATEGORIES)}
    per_row["needle"] = per_row["needle"] + per_row["answer"]
    return {f"{prefix}{name}": _mean(per_row[name]) for name in CATEGORIES}


def _mean(values: Any) -> float:
    return float(values.float().mean())


def _redundancy(gram: Any) -> Any:
    """Each head's mean cosine distance to the layer's other heads, averaged over rows; gram: (R, H, H)."""
    import torch

    norms = gram.diagonal(dim1=-2, dim2=-1).clamp(min=1e-30).sqrt()  # (R, H)
    cosine = gram / (norms[:, :, None] * norms[:, None, :])
    heads = gram.shape[-1]
    if heads < 2:
        return torch.zeros(heads)
    distance = (1.0 - cosine).sum(-1) / (heads - 1)  # the diagonal contributes 1 − 1 = 0
    return distance.mean(0)


def lookback_ratios(
    capture: LayerCapture,
    variant: str,
    version: str | None,
    context_end: int,
    key_chunk: int = DEFAULT_KEY_CHUNK,
) -> Any:
    """Lookback Lens's ratio per output head and row, (H', R): mean attention on the context over it
    plus the mean on the new tokens (Lookback-Lens step01).

    The context is keys [0, context_end) (the prompt before its response header); the new tokens are
    the header and the answer up to the row, the keys a decoding step at that row sees. Diff heads use
    the positive part of their net map, max(A1 − λ·A2, 0) (docs/design/probes.md), so a mean stays a mass.
    """
    import torch

    pairing = pairing_for(capture, variant, version)
    lam = diff_lambda(capture, pairing, version) if pairing.kind == "diff" else None
    positions = _row_positions(capture)
    rows = int(capture.query.shape[1])
    context = torch.zeros(len(pairing.positive), rows, device=capture.key.device)
    new = torch.zeros_like(context)
    for start, p, _ in probability_chunks(capture.query, capture.key, positions, capture.scaling, key_chunk):
        maps = p[pairing.positive]
        if lam is not None:
            maps = (maps - lam[..., None] * p[pairing.negative]).clamp(min=0.0)
        split = min(max(context_end - start, 0), p.shape[-1])
        context += maps[..., :split].sum(-1)
        new += maps[..., split:].sum(-1)
    seen = (positions - context_end + 1).clamp(min=0).float()  # new keys visible at each row
    context_mean = context / max(context_end, 1)
    new_mean = torch.where(seen > 0, new / seen.clamp(min=1.0), torch.zeros_like(new))
    return context_mean / (context_mean + new_mean).clamp(min=1e-30)


def dex_relative_norms(capture: LayerCapture) -> list[float]:
    """Per head, the mean over rows of ||O_h − DEX(O)_h|| / ||O_h|| (no norm: ||λ·O_h W_D|| / ||O_h||)."""
    import torch

    dex = capture.module.dex
    output = capture.output  # (R, H, d)
    rows, heads, dim = output.shape
    with torch.inference_mode():
        changed = dex(output.reshape(rows, heads * dim)).reshape(rows, heads, dim)
    change = (output.float() - changed.float()).norm(dim=-1)
    size = output.float().norm(dim=-1).clamp(min=1e-30)
    return [float(v) for v in (change / size).mean(0)]


# ---------------------------------------------------------------------------------------------------
# One sample
# ---------------------------------------------------------------------------------------------------


@dataclass
class SampleAttention:
    """Every head record of one model on one sample, and the teacher-forced answer it gave."""

    records: list[dict[str, Any]]
    answer_logprob: float
    greedy_exact: bool
    answer_span: tuple[int, int]
    answer_spans: list[Span] = field(default_factory=list)  # multi-needle: each asked needle's answer


def analyse_sample(
    model: Any,
    tokenizer: Any,
    sample: Any,
    variant: str,
    version: str | None = None,
    key_chunk: int = DEFAULT_KEY_CHUNK,
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    shared: SharedContext | None = None,
) -> SampleAttention:
    """Attention allocation of every head at the answer rows of one NIAH sample."""
    from diffbench.engine.teacher_forcing import answer_stats

    sequence = list(sample.input_ids) + list(sample.answer_ids[:-1])
    rows = len(sample.answer_ids)
    captured = capture_rows(model, sequence, rows, prefill_chunk, shared)
    asked = [(tuple(sample.needle_span), sample.answer)]
    if sample.needles:  # multi-needle: the asked needles, in the asked order
        placed = sorted((n for n in sample.needles if n.query is not None), key=lambda n: n.query)
        asked = [(tuple(n.span), n.value) for n in placed]
    ids = list(sample.input_ids)
    spans = [answer_span(ids, needle, value, tokenizer) for needle, value in asked]
    needles = [needle for needle, _ in asked]
    distractors = [tuple(n.span) for n in sample.needles or [] if n.query is None and not n.value]
    labels = key_labels(len(sequence), needles, tuple(sample.haystack_span), spans, distractors=distractors)
    records: list[dict[str, Any]] = []
    for capture in captured.layers:
        records.extend(layer_head_records(capture, labels, variant, version, key_chunk))
        capture.query = capture.key = capture.output = None  # the key is a view of the cache: let it go
    logprob, greedy = answer_stats(captured.logits, list(sample.answer_ids))
    return SampleAttention(records, logprob, greedy, spans[0], spans if sample.needles else [])
