"""Synthetic scaling studies drawn from known laws: for tests, the benchmark, and for checking a sweep design
(does this grid recover the exponents I care about within the CI I need?) before spending compute on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaling.base.record import RunRecord


@dataclass(frozen=True)
class Truth:
    """L(N, D) = E + A/N^alpha + B/D^beta with N = M/6, times a quadratic penalty in ln(lr/eta_opt), ln(B/B_opt)."""

    E: float = 1.8
    A: float = 400.0
    B: float = 2000.0
    alpha: float = 0.34
    beta: float = 0.37
    eta_coef: float = 0.3118
    eta_exp: float = -0.125
    bs_coef: float = 0.2920
    bs_exp: float = 0.3271
    lr_curv: float = 0.01  # relative loss penalty per (ln lr/eta_opt)^2
    bs_curv: float = 0.006  # relative loss penalty per (ln B/B_opt)^2

    @property
    def a(self) -> float:
        return self.beta / (self.alpha + self.beta)

    def M_opt(self, C):
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        return 6 * G * (np.asarray(C, float) / 6) ** self.a  # N_opt = G (C/6)^a and M = 6N

    def eta_opt(self, C):
        return self.eta_coef * np.asarray(C, float) ** self.eta_exp

    def B_opt(self, C):
        return self.bs_coef * np.asarray(C, float) ** self.bs_exp

    def loss(self, M, D, lr=None, bs=None, C=None):
        L = self.E + self.A / (np.asarray(M) / 6) ** self.alpha + self.B / np.asarray(D) ** self.beta
        if lr is not None:
            L = L * (
                1 + self.lr_curv * np.log(lr / self.eta_opt(C)) ** 2 + self.bs_curv * np.log(bs / self.B_opt(C)) ** 2
            )
        return L


def _shape_counts(M: np.ndarray, seq_len: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """N1, N2 of an idealised DeepSeek-shaped model (d/n_layer = 128, FFN 8/3 d): M = (72 d^3 + 12 d^2 l)/128."""
    d = np.cbrt(M * 128 / 72)
    for _ in range(50):  # Newton on f(d) = 72 d^3 + 12 l d^2 - 128 M
        d = d - (72 * d**3 + 12 * seq_len * d**2 - 128 * M) / (216 * d**2 + 24 * seq_len * d)
    N1 = 12 * d**3 / 128
    return N1, N1 + vocab * d


@dataclass
class _Records:
    """result.json records drawn one at a time from the truth, with multiplicative noise on every finished run."""

    truth: Truth
    rng: np.random.Generator
    noise: float
    dataset: str
    seed: int
    seq_len: int
    vocab: int
    out: list[dict] = field(default_factory=list)

    def add(self, sweep: str, C: float, M: float, lr: float, bs: float, status="completed", err=None) -> None:
        D = float(C / M)
        N1, N2 = _shape_counts(np.array(M), self.seq_len, self.vocab)
        loss = None
        if status == "completed":
            loss = float(self.truth.loss(M, D, lr, bs, C) * (1 + self.noise * self.rng.standard_normal()))
        self.out.append(
            {
                "schema_version": 1,
                "run_id": f"{self.dataset.split('@')[0]}-{sweep}-{len(self.out):05d}",
                "status": status,
                "error": err,
                "sweep": sweep,
                "budget": float(C),
                "model": {"seq_len": self.seq_len},
                "N1": float(N1),
                "N2": float(N2),
                "params": float(N2),
                "M": float(M),
                "M_6N1": float(6 * N1),
                "M_6N2": float(6 * N2),
                "D": D,
                "C": float(M * D),
                "lr": float(lr),
                "batch_size": float(bs),
                "seq_len": self.seq_len,
                "val_loss": loss,
                "dataset": self.dataset,
                "seed": self.seed,
            }
        )


def _isoflop_runs(r: _Records, C: float, n_sizes: int, span: float) -> None:
    """n_sizes models log-spaced over +-span decades around the true M_opt (centre jittered), at the true eta, B."""
    eta, bs = float(r.truth.eta_opt(C)), float(r.truth.B_opt(C))
    centre = np.log10(r.truth.M_opt(C)) + r.rng.uniform(-0.1, 0.1)
    for M in 10 ** np.linspace(centre - span, centre + span, n_sizes):
        r.add("isoflop", C, M, eta, bs)


def _hparams_runs(r: _Records, C: float, lr_steps: int, bs_steps: int, n_diverged: int, n_failed: int) -> None:
    """The M_opt model on a lr x batch grid in sqrt(2) steps around the truth, plus diverged and failed runs."""
    eta, bs = float(r.truth.eta_opt(C)), float(r.truth.B_opt(C))
    Mh = float(r.truth.M_opt(C))
    lr_c, bs_c = r.rng.uniform(-0.25, 0.25, 2)  # grid centres jittered by up to half a step
    for i in np.arange(lr_steps) - lr_steps // 2:
        for j in np.arange(bs_steps) - bs_steps // 2:
            r.add("hparams", C, Mh, eta * 2 ** ((i + lr_c) / 2), bs * 2 ** ((j + bs_c) / 2))
    for _ in range(n_diverged):
        r.add("hparams", C, Mh, 16 * eta, bs, "diverged", "loss became NaN")
    for _ in range(n_failed):
        r.add("hparams", C, Mh, eta, bs, "failed", "CUDA out of memory")


def make_study(
    truth: Truth = Truth(),
    budgets=(1e17, 3e17, 1e18, 3e18, 1e19),
    n_sizes: int = 9,
    span: float = 0.6,
    lr_steps: int = 7,
    bs_steps: int = 5,
    noise: float = 0.001,
    n_diverged: int = 1,
    n_failed: int = 1,
    dataset: str = "synthetic@00000000",
    seed: int = 0,
    seq_len: int = 2048,
    vocab: int = 32000,
) -> list[dict]:
    """result.json records of an IsoFLOP + hparams study at `budgets`.

    IsoFLOP: n_sizes models log-spaced over +-span decades around the true M_opt (centre jittered by 0.1 decade),
    trained at the true eta/B. Hparams: the M_opt model on a lr x batch grid in sqrt(2) steps around the truth.
    Multiplicative Gaussian noise of relative size `noise`; per budget n_diverged/n_failed extra hparams runs.
    """
    r = _Records(truth, np.random.default_rng(seed), noise, dataset, seed, seq_len, vocab)
    for C in budgets:
        _isoflop_runs(r, C, n_sizes, span)
        _hparams_runs(r, C, lr_steps, bs_steps, n_diverged, n_failed)
    return r.out


def write_study(records: list[dict], root: str | Path) -> Path:
    """One <root>/<run_id>/result.json per record, like scaling.train writes them."""
    root = Path(root)
    for r in records:
        RunRecord.from_dict(r).write(root / r["run_id"])
    return root
