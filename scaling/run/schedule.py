"""Learning-rate schedules: linear warmup, then DeepSeek's multi-step decay or cosine."""

from __future__ import annotations

import math

SCHEDULES = ("multistep", "cosine")


def warmup_steps(total_steps: int, warmup_frac: float, max_warmup_steps: int) -> int:
    """Warmup as a fraction of the run: DeepSeek's fixed 2000 steps would swallow a whole short run."""
    return max(1, min(max_warmup_steps, round(warmup_frac * total_steps)))


def lr_at(
    step: int,
    total_steps: int,
    peak_lr: float,
    *,
    schedule: str = "multistep",
    warmup: int = 1,
    min_lr_frac: float = 0.1,
) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`.

    multistep (DeepSeek LLM §2.3): peak until 80% of the tokens, 31.6% of peak until 90%, then 10%.
    cosine: from peak down to min_lr_frac·peak at the last step.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    progress = step / total_steps  # fraction of tokens already consumed before this step
    if schedule == "multistep":
        if progress < 0.8:
            return peak_lr
        return peak_lr * (0.316 if progress < 0.9 else 0.1)
    decay = (step - warmup) / max(1, total_steps - 1 - warmup)
    return peak_lr * (min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, decay))))
