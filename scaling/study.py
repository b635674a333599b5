"""A whole scaling study in DeepSeek LLM's order, from one command.

    python -m scaling.study                              # conf/study/cpu_demo.yaml: minutes on a laptop CPU
    python -m scaling.study gpu_deepseek --dry-run       # DeepSeek's design: the plan and its GPU-hours
    python -m scaling.study cpu_demo hydra/launcher=joblib   # extra Hydra overrides go to every sweep
    python -m scaling.study cpu_demo data=wiki --out runs/cpu_demo_wiki   # another corpus, in another directory
    python -m scaling.study --samples                    # + a greedy sample of each IsoFLOP budget's best run
    python -m scaling.study --config-dir my_conf my_study  # my_conf/study/my_study.yaml; every sweep gets my_conf

Stage 1 sweeps batch size x learning rate at a few budgets and fits eta_opt(C), B_opt(C); stage 2 runs IsoFLOP
profiles whose learning rate and batch come from those fitted laws; stage 3 fits everything (analysis.fit) and
writes the report and plots. Each stage is an ordinary `python -m scaling.sweep` process, so a rerun reuses every
finished run and the study resumes where it stopped.

The whole study file is validated before stage 1 (also with --dry-run): sections, keys, budgets, every stage's
overrides as Hydra composes them (sweeps.study). Between stages the console shows the fitted laws with their
intervals and every warning of the stage's report, and stage 2 is centred on the laws that deserve it
(sweeps.gate). study.json in the study's directory makes scaling.status and analysis.fit_runs study-aware.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from analysis.fit import analyse
from analysis.options import OPTION_NAMES, FitOptions
from analysis.planning import summary_lines
from scaling.base.cli import EXIT_FAILED, fail
from scaling.base.configs import load_study, pop_config_dir, search_dirs, study_path
from scaling.base.laws import format_law
from scaling.base.studyfile import write_study
from sweeps import gate
from sweeps.config import SweepConfig, nearest
from sweeps.laws import Laws
from sweeps.owners import (
    check_no_live_stage,
    check_stage_done,
    check_stage_free,
    claim_study,
    clear_stage,
    die_with_parent,
    record_stage,
    release_study,
)
from sweeps.reuse import reuse_cost
from sweeps.study import StudySpec, runs_per_budget


def budgets_arg(budgets: list[float]) -> str:
    return "[" + ",".join(f"{float(b):g}" for b in budgets) + "]"


def sweep(stage: str, budgets: list[float], sweep_dir: Path, overrides: list[str]) -> None:
    cmd = [
        sys.executable,
        "-m",
        "scaling.sweep",
        f"+{stage}={budgets_arg(budgets)}",
        f"sweep.dir={sweep_dir}",
        *overrides,
    ]
    dry = "sweep.dry_run=true" in overrides  # plans only: nobody's runs are touched
    if not dry:
        check_stage_free(stage, sweep_dir)  # runs a killed study's processes still train: wait for them, or refuse
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    # Same working directory: relative paths mean the same everywhere. The sweep dies with this process (a kill -9
    # of the study stops its stage too), and is recorded so that a rerun finds it where it could not die with us.
    proc = subprocess.Popen(cmd, preexec_fn=die_with_parent())
    record_stage(sweep_dir.parent, stage, proc.pid)
    try:
        code = proc.wait()
    except BaseException:  # Ctrl-C reached the sweep too: let it stop its runs, then make sure it is gone
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        clear_stage(sweep_dir.parent)
    if code != 0:
        raise RuntimeError(f"the {stage} sweep failed (see its output above); rerun the study to resume it")
    if not dry:
        check_stage_done(stage, sweep_dir)  # busy runs it skipped: never fit (or say "done") over them


def plan_seconds(sweep_dir: Path) -> tuple[float, float]:
    """A stage's estimated seconds (est_seconds of its plan.csv) with the reuse it plans, and without."""
    with (sweep_dir / "plan.csv").open() as f:
        table = list(csv.DictReader(f))
    return reuse_cost(table, "est_seconds"), sum(float(row["est_seconds"]) for row in table)


def load_spec(name: str, extra: list[str], dirs: Sequence[Path] = ()) -> tuple[StudySpec, dict[str, SweepConfig]]:
    """The study file validated whole before anything trains (one-line ValueError): sections, keys and budgets,
    every stage's overrides as Hydra composes them, every sweep.* key, the analysis options, and enough budgets per
    stage for the laws it must fit."""
    raw, path = load_study(name, dirs), str(study_path(name, dirs))
    spec = StudySpec.from_dict(raw, path)
    sweeps = {st.kind: spec.compose(st.kind, extra) for st in spec.stages}
    need = analysis_options(spec).min_budgets
    for st in spec.stages:
        if len(set(st.budgets)) < need:
            raise ValueError(
                f"{path}: {st.kind}.budgets has {len(set(st.budgets))} budget(s), fewer than analysis.min_budgets="
                f"{need}: its laws could not be fitted; add budgets"
            )
    return spec, sweeps


def analysis_options(spec: StudySpec) -> FitOptions:
    """The study's analysis section as the FitOptions every fit of the study uses: its keys are FitOptions fields
    (analysis.fit's options), its values valid (one-line ValueError naming the study file otherwise)."""
    for key in spec.analysis:
        if key not in OPTION_NAMES:
            near = nearest(str(key), OPTION_NAMES)
            hint = f"did you mean analysis.{near}? " if near else ""
            raise ValueError(
                f"{spec.path}: unknown key analysis.{key}: {hint}(analysis.fit options: {', '.join(OPTION_NAMES)})"
            )
    try:
        return FitOptions(**spec.analysis)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{spec.path}: analysis: {e}") from None


def write_study_file(spec: StudySpec, root: Path, sweeps: dict[str, SweepConfig], name: str) -> None:
    stages = [
        {
            "kind": st.kind,
            "dir": st.kind,
            "budgets": list(st.budgets),
            "runs_per_budget": runs_per_budget(st.kind, sweeps[st.kind]),
        }
        for st in spec.stages
    ]
    info = {"name": name, "file": spec.path, "stages": stages, "analysis": spec.analysis, "fit_dir": "analysis"}
    write_study(root, info)


def print_fit(stage: str, report: dict, report_md: Path) -> None:
    """Between stages: the laws a stage's fit gave, with their intervals, and every warning its report holds."""
    print(f"== {stage} fitted ({report_md}):")
    for section, key in (("hparams", "eta_opt"), ("hparams", "B_opt"), ("isoflop", "M_opt"), ("isoflop", "D_opt")):
        if section in report or section in report.get("skipped", {}):
            print("  " + _law(report, section, key))
    for w in report.get("warnings", []):
        print(f"  warning: {w}")


def centre_next(report_json: Path, prior: str) -> str:
    """The laws stage 2 is centred on (sweeps.gate): fitted where their interval is usable, else the prior (stage
    1's sweep.laws), named."""
    path, lines = gate.write(report_json, "stage 1", Laws.load(prior))
    print("== centring stage 2 (fitted laws whose exponent interval excludes zero, else the prior):")
    for line in lines:
        print(f"  {line}")
    return str(path)


def run_study(
    name: str,
    extra: list[str],
    dry_run: bool,
    out: Path | None = None,
    samples: bool = False,
    dirs: Sequence[Path] = (),
) -> dict | None:
    """`dirs`: config folders where the study name is looked up after conf/study/ (scaling.base.configs.search_dirs);
    a --config-dir among them must also be in `extra`, for the sweeps."""
    spec, sweeps = load_spec(name, extra, dirs)  # the whole file, before stage 1 (also for --dry-run)
    options = analysis_options(spec)
    root = Path(out or spec.dir)
    common = [*spec.overrides, *extra] + (["sweep.dry_run=true"] if dry_run else [])
    hp_dir, iso_dir, fit_dir = root / "hparams", root / "isoflop", root / "analysis"
    hp, iso = spec.stage("hparams"), spec.stage("isoflop")
    prior = sweeps["hparams"].laws  # what stage 1 is centred on (DeepSeek's unless the study says otherwise)
    write_study_file(spec, root, sweeps, name)
    t0 = time.time()

    print(f"== stage 1/3: batch size x learning rate at C = {budgets_arg(list(hp.budgets))}")
    sweep("hparams", list(hp.budgets), hp_dir, [*common, *hp.overrides])
    last_fit = hp_dir / "analysis" / "report.json"
    if dry_run:
        # Nothing is fitted in a dry run: the IsoFLOP plan is centred as the real run would centre it on stage 1's
        # last fit where there is one (a study being resumed), else on DeepSeek's laws. Planning with other laws
        # than the real run would report every finished IsoFLOP run as a run of another config.
        laws = centre_next(last_fit, prior) if last_fit.exists() else prior
    else:
        print("== fitting eta_opt(C), B_opt(C) on stage 1")
        report1, _ = analyse([hp_dir], hp_dir / "analysis", options, plots=True)
        print_fit("stage 1", report1, hp_dir / "analysis" / "report.md")
        laws = centre_next(last_fit, prior)

    print(f"== stage 2/3: IsoFLOP profiles at C = {budgets_arg(list(iso.budgets))} (laws: {laws})")
    sweep("isoflop", list(iso.budgets), iso_dir, [*common, *iso.overrides, f"sweep.laws={laws}"])
    if dry_run:
        (hp_with, hp_without), (iso_with, iso_without) = plan_seconds(hp_dir), plan_seconds(iso_dir)
        print(
            f"\nplanned: stage 1 {hp_dir / 'plan.csv'}, stage 2 {iso_dir / 'plan.csv'}; estimated "
            f"{(hp_with + iso_with) / 3600:,.1f} device-hours in all with reuse, "
            f"{(hp_without + iso_without) / 3600:,.1f} without (est_seconds of both plans, one device per run)"
        )
        return None

    print("== stage 3/3: fitting the study")
    report, _ = analyse([hp_dir, iso_dir], fit_dir, options)
    if samples:
        write_samples(iso_dir, fit_dir / "report.md", spec.sample_prompt or SAMPLE_PROMPT)
    print_fit("stage 3", report, fit_dir / "report.md")
    print_summary(report, fit_dir, time.time() - t0)
    return report


def run_owned_study(
    name: str,
    extra: list[str],
    dry_run: bool,
    samples: bool = False,
    dirs: Sequence[Path] = (),
    out: Path | None = None,
) -> dict | None:
    """run_study as the one owner of its study dir (`out`, else the file's `dir`; sweeps.owners): a second live
    study is refused, and a rerun after a kill -9 first makes sure no stage of the killed one still runs."""
    if dry_run:  # plans only: needs no ownership
        return run_study(name, extra, dry_run, out=out, samples=samples, dirs=dirs)
    load_spec(name, extra, dirs)  # bad input is refused before the study dir is created or claimed
    root = Path(out or load_study(name, dirs)["dir"])
    mine = claim_study(root)
    try:
        check_no_live_stage(root)
        return run_study(name, extra, dry_run, out=out, samples=samples, dirs=dirs)
    finally:
        release_study(root, mine)


def pop_out(args: Sequence[str]) -> tuple[Path | None, list[str]]:
    """`--out DIR` / `--out=DIR` (the study's directory instead of its file's `dir`: the same study on another
    corpus must not meet the first one's runs) and the other arguments."""
    out: str | None = None
    rest: list[str] = []
    it = iter(args)
    for a in it:
        if a == "--out":
            out = next(it, "")
        elif a.startswith("--out="):
            out = a.split("=", 1)[1]
        else:
            rest.append(a)
    if out == "" or (out or "").startswith("-"):
        raise ValueError("--out needs a directory, e.g. --out runs/cpu_demo_wiki")
    return (Path(out) if out is not None else None), rest


SAMPLE_PROMPT = "The state of the Union is"


def write_samples(iso_dir: Path, report_md: Path, prompt: str, max_new_tokens: int = 32) -> None:
    """A greedy continuation of `prompt` by each IsoFLOP budget's best run, printed and appended to report.md: what
    the models learned, next to the numbers (off by default: a model load and a decode per budget)."""
    from scaling.run.sampling import best_per_budget, sample

    lines = ["", "## Samples (greedy, best run of each IsoFLOP budget)", "", f"Prompt: `{prompt}`", ""]
    for budget, run_dir, loss in best_per_budget(iso_dir):
        try:
            text = sample(run_dir, prompt, max_new_tokens=max_new_tokens, temperature=0.0, top_k=None).continuation
        except ValueError as e:  # e.g. a run without a checkpoint: say so, the report stays valid
            text = f"(no sample: {e})"
        line = f"- C = {budget:.3g}, {run_dir.name} (val_loss {loss:.4f}): {' '.join(text.split())}"
        print("  " + line[2:])
        lines.append(line)
    with report_md.open("a") as f:
        f.write("\n".join(lines) + "\n")


def _law(report: dict, section: str, key: str) -> str:
    law = (report.get(section) or {}).get(key)
    if law is None:
        return f"{key}: not fitted ({report.get('skipped', {}).get(section, 'no data')})"
    return f"{key} = {format_law(law)}"


def print_summary(report: dict, fit_dir: Path, seconds: float) -> None:
    print(f"\n== study done in {seconds / 60:.1f} min: {fit_dir / 'report.md'}, {fit_dir / 'plots'}/")
    for section, key in (("hparams", "eta_opt"), ("hparams", "B_opt"), ("isoflop", "M_opt"), ("isoflop", "D_opt")):
        print("  " + _law(report, section, key))
    # Every prediction with its 95% interval, and the flags (beyond the horizon, below the irreducible loss).
    lines = summary_lines(report)
    if lines:
        print(f"  predictions ({(report.get('metric') or {}).get('label', 'loss')}; 95% bootstrap intervals):")
        print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    dry_run, samples = "--dry-run" in args, "--samples" in args
    args = [a for a in args if a not in ("--dry-run", "--samples")]
    try:
        # --config-dir (as scaling.train/sweep take it) and hydra.searchpath: where study names are found too, and
        # (as an absolute path, the sweeps may run elsewhere) what every sweep gets
        config_dir, args = pop_config_dir(args)
        out, args = pop_out(args)
        name = args.pop(0) if args and "=" not in args[0] else "cpu_demo"
        dirs = search_dirs(args, config_dir)
        extra = ([f"--config-dir={dirs[0]}"] if config_dir is not None else []) + args
        run_owned_study(name, extra, dry_run, samples=samples, dirs=dirs, out=out)
    except ValueError as e:
        fail("scaling.study", e)
    except RuntimeError as e:  # a stage failed, or another process owns it (StageBusy): one line; rerunning resumes
        fail("scaling.study", e, code=EXIT_FAILED)


if __name__ == "__main__":
    main()
