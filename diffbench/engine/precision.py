"""The precision audit: how far a low-precision run's answers are from float32's, per model.

bf16 is the CUDA default, and variants do not suffer it alike: a Diff model subtracts two softmax
maps, so rounding moves its log-probs far more than a baseline's (zoo:diff by up to 1.0 nat in bf16,
zoo:baseline by 0.001). Comparing variants at different effective precision is not comparing
variants. So before a model runs in bf16/fp16, its first N pending samples are scored from the same
checkpoint loaded in float32 (then freed), and once the run has scored them too, the drift of the
answer log-probs and the verdicts that flip are written to the manifest (``engine[model]
.precision_audit``) and shown, with a warning past ``DRIFT_BOUND``.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_AUDIT_SAMPLES = 8
DRIFT_BOUND = 0.1  # nats of answer log-probability: past it (or any flipped verdict) a warning is shown


@dataclass
class PrecisionAudit:
    """float32 references for some samples, and the low-precision run's records as they arrive."""

    dtype: str
    reference: dict[str, tuple[float, bool]]  # sample_id → (answer log-prob, correct) in float32
    drifts: list[float] = field(default_factory=list)
    flipped: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    @property
    def compared(self) -> int:
        return len(self.seen)

    def observe(self, sample_id: str, logprob: float, correct: bool) -> None:
        """Compare one record of the run with its float32 reference, if it has one."""
        if sample_id not in self.reference:
            return
        want_logprob, want_correct = self.reference[sample_id]
        self.seen.add(sample_id)
        if math.isfinite(logprob) and math.isfinite(want_logprob):
            self.drifts.append(abs(logprob - want_logprob))
        else:
            self.drifts.append(math.inf)
        if correct != want_correct:
            self.flipped.append(sample_id)

    @property
    def max_drift(self) -> float | None:
        return max(self.drifts) if self.drifts else None

    def exceeds_bound(self) -> bool:
        return bool(self.flipped) or (self.max_drift is not None and self.max_drift > DRIFT_BOUND)

    def as_manifest(self) -> dict[str, object]:
        finite = [d for d in self.drifts if math.isfinite(d)]
        return {
            "dtype": self.dtype,
            "reference_dtype": "float32",
            "samples": self.compared,
            "sample_ids": [sample_id for sample_id in self.reference if sample_id in self.seen],
            "max_abs_logprob_drift": None if not finite else round(max(finite), 6),
            "mean_abs_logprob_drift": None if not finite else round(sum(finite) / len(finite), 6),
            "nonfinite": len(self.drifts) - len(finite),
            "verdict_flips": len(self.flipped),
            "flipped_samples": self.flipped,
            "bound": DRIFT_BOUND,
            "exceeds_bound": self.exceeds_bound(),
        }


def needs_audit(dtype: Any, count: int) -> bool:
    import torch

    return count > 0 and dtype != torch.float32


def float32_reference(
    prepared: Any, device: Any, samples: list[Any], score: Any, dtype_label: str
) -> PrecisionAudit:
    """Score ``samples`` with the checkpoint loaded in float32 on ``device``; ``score(loaded, samples)``
    yields their records as the run itself would make them. The float32 copy is freed afterwards."""
    import torch

    from diffbench.models.device import attention_implementation
    from diffbench.models.load import load_weights

    attention = attention_implementation(device, torch.float32, prepared.config)
    loaded = load_weights(prepared, device, torch.float32, attention)
    reference = {
        record.sample_id: (record.answer_logprob, record.correct) for record in score(loaded, samples)
    }
    del loaded
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return PrecisionAudit(dtype=dtype_label, reference=reference)


def audit_warning(model: str, audit: dict[str, Any]) -> str | None:
    """The one-line warning for a manifest's precision_audit entry past the bound, else None."""
    if not audit.get("exceeds_bound"):
        return None
    drift = audit.get("max_abs_logprob_drift")
    drift_text = "non-finite" if drift is None else f"up to {drift:.3g} nat"
    return (
        f"{model} in {audit['dtype']}: answer log-probs drift {drift_text} from float32 on its first "
        f"{audit['samples']} samples and {audit['verdict_flips']} verdict(s) flip; variants may be compared "
        "at different effective precision: rerun with --dtype float32 to compare them at one"
    )
