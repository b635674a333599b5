"""`python -m scaling.status` on a study's directory: its stages (done, running, planned next) and the study's ETA.

A study (scaling.study) writes study.json before stage 1, so its stages are known before they are planned. A stage
with a plan.csv is a sweep like any other (sweeps.progress); a stage not planned yet (stage 2 waits for stage 1's
fit) is estimated from its budgets and runs per budget at the throughput this study's finished runs measured --
seconds per FLOP under today's load, packs counted at their share of machine time -- before any sweep.extend rounds.
The ETA divides the work left by the processes training now (a pack is one process).
"""

from __future__ import annotations

from pathlib import Path

from scaling.base.cli import fmt_seconds
from scaling.base.studyfile import STUDY_NAME, read_study

from .progress import DONE, Sweep, _summary, processes


def seconds_per_flop(sweeps: list[Sweep]) -> float | None:
    """Machine seconds per FLOP of the finished runs (their C over their share of wall time), or None."""
    took = sum(r.wall_s for s in sweeps for r in s.runs if r.state == "completed" and r.wall_s and r.C)
    flops = sum(r.C for s in sweeps for r in s.runs if r.state == "completed" and r.wall_s and r.C)
    return took / flops if flops > 0 else None


def study_lines(root: Path, sweeps: list[Sweep]) -> tuple[list[str], bool] | None:
    """(lines, whether every stage and the fit are done), or None when root is not a study's directory."""
    info = read_study(root)
    if info is None:
        return None
    by_path = {s.path.resolve(): s for s in sweeps}
    stages = [st for st in info["stages"] if isinstance(st, dict)]
    per_flop = seconds_per_flop(sweeps)
    fit_dir = root / str(info.get("fit_dir") or "analysis")
    lines = [f"study {info.get('name', root.name)} ({root / STUDY_NAME}): {len(stages)} stage(s), then the fit"]
    work, known, complete, next_named, procs = 0.0, True, True, False, 0
    for k, st in enumerate(stages, 1):
        s = by_path.get((root / str(st.get("dir"))).resolve())
        head = f"  stage {k}/{len(stages)} {st.get('kind')}"
        if s is None:  # not planned yet
            budgets = [float(b) for b in st.get("budgets") or []]
            n = int(st.get("runs_per_budget") or 0)
            state = "planned next" if not next_named else "planned"
            next_named, complete = True, False
            est = n * sum(budgets) * per_flop if per_flop else None
            lines.append(
                f"{head}: {state}: {len(budgets)} budget(s) x {n} runs (before sweep.extend), "
                + (
                    f"~{fmt_seconds(est)} of work at the {1 / per_flop:.3g} FLOP/s this study's runs measured"
                    if est is not None and per_flop
                    else "no finished run to time it by yet"
                )
            )
            work, known = work + (est or 0.0), known and est is not None
            continue
        c = s.counts()
        done = c.keys() <= set(DONE) and not s.plan_unusable
        n_proc = processes(s)
        procs += n_proc
        state = "done" if done else ("running" if n_proc else "waiting")
        complete = complete and done
        left = "" if done else f", {fmt_seconds(s.work_left_s)} of work left"
        lines.append(f"{head}: {state}: {_summary(c)}" + left)
        if not done:
            work, known = work + (s.work_left_s or 0.0), known and s.work_left_s is not None
    fitted = (fit_dir / "report.json").exists()
    lines.append(f"  then: the fit ({fit_dir}): {'done' if fitted and complete else 'after the last stage'}")
    if not complete:
        if not known:
            lines.append("  study ETA ?: some work cannot be timed yet")
        elif procs:
            lines.append(f"  study ETA {fmt_seconds(work / procs)} at the {procs} process(es) running now")
        else:
            lines.append(f"  nothing running: {fmt_seconds(work)} of work left")
    return lines, complete and fitted
