"""The docs work: every relative link in README.md, BENCHMARKS.md and the package READMEs resolves (files, and
#anchors of markdown headings), every `python -m <module> ...` they show names a module that exists and whose
arguments parse (argparse commands also answer --help; Hydra commands compose with their overrides, so every key
and config group named exists), and every `from x import y` of their Python examples imports. Nothing trains: an
argparse command is stopped right after parsing its arguments."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
from pathlib import Path
from unittest import mock

import pytest
from hydra import compose, initialize_config_dir

from scaling.base.configs import conf_dir, load_study

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "scaling", "sweeps", "analysis", "conf")
DOCS = sorted(
    {ROOT / "README.md", ROOT / "BENCHMARKS.md"}
    | {p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.md") if "__pycache__" not in p.parts}
)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HYDRA_CONFIG = {"scaling.train": "run", "scaling.prepare": "run", "scaling.sweep": "sweep"}
PYTHONS = re.compile(r"^(\S*/)?python(3(\.\d+)?)?$")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """The text outside code fences and inline code: where links live."""
    return INLINE.sub("", FENCE.sub("", text))


def anchors(md: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped (not - or _), spaces as hyphens; repeats get -N."""
    out: set[str] = set()
    for line in FENCE.sub("", md.read_text()).splitlines():
        m = re.match(r"^#{1,6} +(.*?) *#*$", line)
        if not m:
            continue
        base = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        slug, n = base, 0
        while slug in out:
            n += 1
            slug = f"{base}-{n}"
        out.add(slug)
    return out


def links() -> list[tuple[str, str]]:
    return [
        (rel(doc), target)
        for doc in DOCS
        for target in LINK.findall(prose(doc.read_text()))
        if not re.match(r"^[a-z]+:", target)  # http(s), mailto: not checked offline
    ]


def test_the_docs_exist():
    assert {"README.md", "BENCHMARKS.md", "sweeps/README.md", "analysis/README.md"} <= {rel(d) for d in DOCS}
    assert len(links()) > 20 and len(commands()) > 20  # the extraction below finds what the docs show


@pytest.mark.parametrize("doc, target", links())
def test_relative_link_resolves(doc: str, target: str):
    path, _, anchor = target.partition("#")
    dest = (ROOT / doc).parent / path if path else ROOT / doc
    assert dest.exists(), f"{doc}: link {target!r} points to {dest}, which does not exist"
    if anchor:
        assert dest.suffix == ".md", f"{doc}: link {target!r} has an anchor into a file that is not markdown"
        assert anchor in anchors(dest), f"{doc}: link {target!r}: no heading in {rel(dest)} has anchor #{anchor}"


def shell_snippets(text: str) -> list[str]:
    """Shell command lines of the doc: lines of bash/sh fences (continuations joined) and inline code spans."""
    out = []
    for lang, body in FENCE.findall(text):
        if lang in ("bash", "sh", "shell"):
            out += body.replace("\\\n", " ").splitlines()
    out += [" ".join(span.split()) for span in INLINE.findall(FENCE.sub("", text))]
    return out


def parse_command(line: str) -> list[tuple[str, list[str]]]:
    """(module, args) of every `python -m module args` / `torchrun ... -m module args` on one shell line."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:  # not shell (an unbalanced quote in prose code)
        return []
    found, segment = [], []
    for tok in [*tokens, "&&"]:
        if tok not in ("&&", "||", ";", "|"):
            segment.append(tok)
            continue
        starts = [i for i, t in enumerate(segment) if PYTHONS.match(t) or t == "torchrun"]
        if starts and "-m" in segment[starts[0] :]:
            i = segment.index("-m", starts[0])
            if i + 1 < len(segment):
                found.append((segment[i + 1], segment[i + 2 :]))
        segment = []
    return found


def commands() -> list[tuple[str, str, tuple[str, ...]]]:
    seen, out = set(), []
    for doc in DOCS:
        for line in shell_snippets(doc.read_text()):
            for module, args in parse_command(line):
                key = (module, tuple(args))
                if key not in seen:
                    seen.add(key)
                    out.append((rel(doc), module, tuple(args)))
    return out


class Parsed(Exception):
    """Raised right after an argparse command parsed its arguments: the command itself never runs."""


def parse_only(module: str, argv: list[str]) -> int | str | None:
    """Call module.main(argv) until its ArgumentParser has parsed argv; the exit code when parsing exits."""
    main = importlib.import_module(module).main
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(parse_args(self, args, namespace))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop):
        try:
            main(argv)
        except Parsed:
            return None
        except SystemExit as e:
            return e.code
    return "main() returned without parsing its arguments"


def compose_overrides(config: str, overrides: list[str]) -> None:
    """Compose a Hydra config as the command would: an unknown key or config group raises."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        compose(config, overrides=overrides, return_hydra_config=True)


def check_study(args: list[str]) -> None:
    """scaling.study [name] [--dry-run] [--samples] [--out DIR] [overrides]: the study exists and every stage's sweep
    composes with the overrides shown (cluster keys included: each stage names its launcher)."""
    from scaling.study import pop_out

    _, rest = pop_out([a for a in args if a not in ("--dry-run", "--samples")])
    name = rest.pop(0) if rest and "=" not in rest[0] else "cpu_demo"
    study = load_study(name)
    for stage in ("hparams", "isoflop"):
        compose_overrides("sweep", [*study["overrides"], *rest, *study[stage]["overrides"]])


@pytest.mark.parametrize("doc, module, args", commands(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
def test_command_parses(doc: str, module: str, args: tuple[str, ...], capsys):
    assert importlib.util.find_spec(module) is not None, f"{doc}: `python -m {module}`: no such module"
    if module.split(".")[0] not in PACKAGES:
        return  # venv, pytest: not ours to check further
    if module in HYDRA_CONFIG:
        if module == "scaling.prepare":  # its own options (--export, --config-dir) are not Hydra overrides
            from scaling.prepare import parse_args

            args, config_dir, _ = parse_args(list(args))
            assert config_dir is None, f"{doc}: show --config-dir with the console script (its folder is not here)"
        compose_overrides(HYDRA_CONFIG[module], list(args))
        return
    if module == "scaling.study":
        check_study(list(args))
        return
    assert parse_only(module, ["--help"]) == 0, f"{doc}: `python -m {module} --help` does not exit 0"
    assert "usage:" in capsys.readouterr().out, f"{doc}: `python -m {module} --help` prints no usage"
    if args:  # a bare `python -m module` names the command; one shown with arguments must parse them
        code = parse_only(module, list(args))
        assert code is None, f"{doc}: `python -m {module} {' '.join(args)}` does not parse: {capsys.readouterr().err}"


def python_imports() -> list[tuple[str, str, str]]:
    out = []
    for doc in DOCS:
        for lang, body in FENCE.findall(doc.read_text()):
            if lang == "python":
                for mod, names in re.findall(r"^from ([\w.]+) import (.+)$", body, re.M):
                    if mod.split(".")[0] in PACKAGES:  # ours; third-party names are their docs' business
                        out += [(rel(doc), mod, n.strip()) for n in names.split("#")[0].split(",")]
    return out


@pytest.mark.parametrize("doc, module, name", python_imports())
def test_python_example_imports(doc: str, module: str, name: str):
    mod = importlib.import_module(module)
    assert hasattr(mod, name), f"{doc}: `from {module} import {name}`: {module} has no {name}"
