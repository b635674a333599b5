"""Extrapolate fitted laws to target models (conf/model/<name>.yaml) and to arbitrary compute budgets,
with bootstrap CIs, next to the reference from DeepSeek's published coefficients and actual choices."""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.powerlaw import PowerLaw, percentile_ci
from analysis.predict import loss_C_at
from analysis.recommend import recommend_shape
from model import ModelConfig, count_flops
from scaling.base.configs import load_model_config
from scaling.base.laws import DEEPSEEK

# What DeepSeek actually trained with (arXiv 2401.02954, Table 2): peak lr and batch in sequences.
PAPER_CHOICES = {
    "deepseek_7b": {"lr": 4.2e-4, "batch_sequences": 2304},
    "deepseek_67b": {"lr": 3.2e-4, "batch_sequences": 4608},
}


def load_model(name: str) -> ModelConfig:
    """A target by name (conf/model/<name>.yaml, or a user's own YAML path) -> ModelConfig."""
    return load_model_config(name, what="target")


def _with_ci(point: float, samples: np.ndarray | None) -> dict:
    out: dict[str, float | list[float]] = {"value": float(point)}
    if samples is not None and np.isfinite(samples).any():
        out["ci95"] = percentile_ci(samples)
    return out


def _law_at(law: PowerLaw, boot: dict | None, C: float) -> dict:
    s = None if boot is None else 10 ** (boot["log_coef"] + boot["exponent"] * np.log10(C))
    return _with_ci(law(C), s)


def _loss_at(loss: dict | None, C: float) -> dict | None:
    if not loss or "skipped" in loss:
        return None
    return loss_C_at(loss, C)


def _md_at(hp: dict, N: float, D: float) -> tuple[dict, dict]:
    """eta_opt and B_opt (tokens) at (N, D) from the Step-Law form, with bootstrap CIs."""
    md, boot = hp["MD"], hp.get("boot_MD")
    out = []
    for k in ("eta_opt", "B_opt"):
        s = None
        if boot is not None:
            c = boot[k]
            s = 10 ** (c[:, 0] + c[:, 1] * np.log10(N) + c[:, 2] * np.log10(D))
        out.append(_with_ci(float(md[k](N, D)), s) | {"form": "MD"})
    return out[0], out[1]


def predict_at(C: float, M: float, seq_len: int, fits: dict, form: str = "C", N: float | None = None) -> dict:
    """eta_opt, B_opt (tokens and sequences) and loss at compute C from the fitted laws (absent ones omitted).

    form "MD" uses the Step-Law form at (N, D = C/M) when it was fitted; N defaults to M/6."""
    out: dict = {}
    hp = fits.get("hparams") or {}
    if "eta_opt" in hp:
        if form == "MD" and "MD" in hp:
            out["eta_opt"], B = _md_at(hp, N if N is not None else M / 6, C / M)
        else:
            out["eta_opt"] = _law_at(hp["eta_opt"], (hp.get("boot") or {}).get("eta_opt"), C)
            B = _law_at(hp["B_opt"], (hp.get("boot") or {}).get("B_opt"), C)
        out["B_opt"] = B | {
            "sequences": B["value"] / seq_len,
            **({"sequences_ci95": [v / seq_len for v in B["ci95"]]} if "ci95" in B else {}),
        }
    loss = _loss_at(fits.get("loss"), C)
    if loss:
        out["loss"] = loss
    iso = fits.get("isoflop") or {}
    if "M_opt" in iso:
        # Compute-optimal budget for this model size: invert M_opt(C*) = M, then D* = C*/M.
        law, boot = iso["M_opt"], iso.get("boot")
        Cs = (M / law.coef) ** (1 / law.exponent)
        with np.errstate(over="ignore", divide="ignore"):  # a resample with exponent ~0 puts C* at infinity
            s = None if boot is None else 10 ** ((np.log10(M) - boot["log_coef"]) / boot["exponent"])
        out["compute_optimal"] = {"C": _with_ci(Cs, s), "D": _with_ci(Cs / M, None if s is None else s / M)}
    return out


def reference(C: float, M: float, seq_len: int, name: str | None = None) -> dict:
    """The same predictions from DeepSeek's published coefficients (+ the paper's choices for its models)."""
    B = float(DEEPSEEK["B_opt"](C))
    Cs = (M / DEEPSEEK["M_opt"].coef) ** (1 / DEEPSEEK["M_opt"].exponent)
    ref: dict[str, Any] = {
        "eta_opt": {"value": float(DEEPSEEK["eta_opt"](C))},
        "B_opt": {"value": B, "sequences": B / seq_len},
        "compute_optimal": {"C": {"value": Cs}, "D": {"value": Cs / M}},
        "loss": None,
        "note": "DeepSeek published no L(C) coefficients",
    }
    if name in PAPER_CHOICES:
        p = PAPER_CHOICES[name]
        ref["paper"] = p | {
            "lr_rel_diff": ref["eta_opt"]["value"] / p["lr"] - 1,
            "batch_rel_diff": ref["B_opt"]["sequences"] / p["batch_sequences"] - 1,
        }
    return ref


def extrapolate(name: str, D: float, fits: dict, form: str = "C") -> dict:
    """extrapolation.<name>: counts from count_flops, C = M*D, predictions with CIs, and the DeepSeek reference.
    The batch in sequences divides by the target's seq_len (what the target trains with)."""
    cfg = load_model(name)
    fc = count_flops(cfg)
    C = fc.M * D
    return {
        "M": fc.M,
        "N1": fc.N1,
        "N2": fc.N2,
        "params": fc.params,
        "C": C,
        "D": D,
        "seq_len": cfg.seq_len,
        **predict_at(C, fc.M, cfg.seq_len, fits, form),
        "reference": reference(C, fc.M, cfg.seq_len, name),
    }


def recommend(C: float, fits: dict, base: ModelConfig, form: str = "C") -> dict:
    """For `--budget C`: the compute-optimal M from the fitted M_opt(C) (DeepSeek's if absent), a shape
    realising it, D = C/M of that shape, and eta, B, loss at C."""
    iso = fits.get("isoflop") or {}
    law, src = (iso["M_opt"], "fit") if "M_opt" in iso else (DEEPSEEK["M_opt"], "deepseek (no fitted M_opt)")
    cfg = recommend_shape(float(law(C)), base)
    M = count_flops(cfg).M
    return {
        "C": C,
        "M_opt": _law_at(law, iso.get("boot"), C),
        "M_opt_source": src,
        "shape": {
            k: getattr(cfg, k)
            for k in ("n_layer", "d_model", "n_head", "n_kv_head", "ffn_hidden", "vocab_size", "seq_len")
        },
        "M": M,
        "params": count_flops(cfg).params,
        "D": C / M,
        **predict_at(C, M, cfg.seq_len, fits, form),
        "reference": reference(C, M, cfg.seq_len),
    }
