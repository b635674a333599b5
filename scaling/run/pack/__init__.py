"""Packed training: K runs of one shape, one data stream and one step count trained together as one stacked model.

In a batch x learning-rate grid the runs that share a batch size train the same model on the same batches for the
same number of steps; only optimizer scalars differ. Here they become one model whose every weight has a leading
run dimension K: each linear layer is one batched matmul (`bmm`) over the K runs, attention runs once over K*B
sequences, the embedding gathers from K tables at once, and the cross-entropy gives one mean loss per run. One
optimizer step updates all K runs with AdamW on a flat (K, P) buffer, with per-run learning rate (the run's own
schedule, `scaling.run.schedule.lr_at`), weight decay and gradient clipping (each run is clipped by its own norm).
The runs never mix: every op is independent along K, so a run that diverges (NaN, exploding loss) poisons only its
own row. It is recorded `diverged` with the same window semantics as a single run (scaling.run.loop: losses are read
every `train.log_every` steps and the record names the first bad step), then leaves the pack; the others go on.

Why an explicit stacked model and not `torch.func.vmap(functional_call(LLaMA))`: vmap has no batching rule for the
CPU flash-attention kernel and falls back to a per-sample loop; measured at the CPU demo's stage-1 shape (2 layers,
d 16, K = 5, 4 x 64 tokens, 1 thread) it was 1.07x the sequential runs, and 0.59x at 64 x 64 tokens. The stacked
model calls the same functions as `model.llama` (RMSNorm via `F.rms_norm`, `apply_rope`, SDPA with GQA, SwiGLU).

Same records: every run keeps its own run directory with exactly what `scaling.train` writes there (config.yaml,
metrics.jsonl, ckpt.pt in the single-run format, result.json from `scaling.run.setup.result_record`) plus
`packed_with` (the other runs of its pack). A packed run's checkpoint resumes as a single run and vice versa; a run
finished either way is skipped. Evaluation loads the run's row into a plain LLaMA and calls the trainer's own
`evaluate`, so validation numbers come from the same code as for single runs.

Same numbers: a packed run's loss curve equals the same run trained alone up to fp32 rounding (bmm vs mm, a
separate norm weight multiply, the AdamW formula as tensor ops instead of the fused kernel): per-step differences
are ~1e-7 relative and grow slowly over training; tests/test_packed.py bounds them (see PACK_RTOL there).
"""

from scaling.run.pack.train import PER_RUN_KEYS, check_packable, pack_job, pack_key, train_pack

__all__ = ["PER_RUN_KEYS", "check_packable", "pack_job", "pack_key", "train_pack"]
