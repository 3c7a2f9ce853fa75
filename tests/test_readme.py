"""The README as a test: what a new user copies from it exists and runs.

* every ``--option`` it shows is an option of a ``medsr`` command (or of the named external tool
  or benchmark script): ``--maps-dir`` was shown where ``--maps`` is the option;
* every recipe, script, benchmark, results file and figure it names exists;
* its Python snippets run as written on corpus files (a CT series made from CT_small.dcm,
  MR_small.dcm), except the PACS one, which needs a DICOMweb server (``tests/pacs`` runs it);
* the headline numbers of "Where it stands" are the ones the results files it cites hold
  (the ×4 row showed session 18's +1.52 / +1.83 dB after ``faithful_x4.md`` was re-run to
  +1.51 / +1.82).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer

from medsr.cli import app
from tests.conftest import corpus_path, make_ct_series

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = ROOT / "benchmarks" / "results"

#: options in the README that belong to other programs: the tool, and where they appear
EXTERNAL_OPTIONS = {
    "--data-binary": "curl (the Orthanc demo)",
    "--head": "ray start",
    "--logdir": "tensorboard",
    "--nnodes": "torchrun",
    "--nproc_per_node": "torchrun",
    "--node_rank": "torchrun",
    "--master_addr": "torchrun",
    "--master_port": "torchrun",
    "--query": "az account get-access-token",
    "--resource": "az account get-access-token",
    "--bogus": "the example of an unknown option, which medsr refuses",
}


def _medsr_options() -> set[str]:
    found: set[str] = set()

    def walk(cmd) -> None:
        for p in cmd.params:
            found.update(p.opts)
            found.update(p.secondary_opts)
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return found | {"--help"}


def _script_options(script: Path) -> set[str]:
    return set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", script.read_text()))


def test_every_option_the_readme_shows_exists():
    medsr_options = _medsr_options()
    benchmark_options = set().union(
        *(_script_options(p) for p in (ROOT / "benchmarks").glob("*.py"))
    )
    unknown = []
    for line_no, line in enumerate(README.splitlines(), 1):
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*)", line):
            if option in medsr_options or option in EXTERNAL_OPTIONS:
                continue
            if "benchmarks/" in line and option in benchmark_options:
                continue
            unknown.append(f"line {line_no}: {option}")
    assert not unknown, unknown


def _expand(path: str) -> list[str]:
    """``a{x,y}b`` → ``[axb, ayb]`` (the README's shorthand), one level."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [
        q
        for alt in m.group(1).split(",")
        for q in _expand(path[: m.start()] + alt + path[m.end() :])
    ]


def test_every_file_the_readme_names_exists():
    named = set(
        re.findall(r"(?<![\w/.])((?:configs|scripts|benchmarks|docs)/[\w./{},*-]*[\w}])", README)
    )
    missing = [p for path in sorted(named) for p in _expand(path) if not any(ROOT.glob(p))]
    assert not missing, missing


def _python_blocks() -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", README, re.S)]


def test_readme_python_snippets_run(tmp_path):
    """Each snippet runs as written in a folder holding what it reads (one subprocess: torch is
    imported once); a snippet of a kind not known here fails the test, so that it gets a case."""
    runnable, skipped = [], []
    for k, code in enumerate(_python_blocks()):
        where = tmp_path / f"snippet{k}"
        where.mkdir()
        if 'medsr.load_image("ct_series/")' in code:
            make_ct_series(where / "ct_series", n=2)
        elif 'load_image("MR_small.dcm")' in code:
            shutil.copy(corpus_path("MR_small.dcm"), where / "MR_small.dcm")
        elif "run_batch(" in code:
            (where / "archive").mkdir()
            shutil.copy(corpus_path("MR_small.dcm"), where / "archive" / "MR_small.dcm")
        elif "from medsr.pacs import" in code:
            skipped.append(k)  # needs a DICOMweb server: tests/pacs/test_pacs.py
            continue
        elif "@register_model" not in code:
            pytest.fail(f"README python snippet {k} has no case in this test:\n{code}")
        runnable.append((str(where), code))
    assert len(runnable) >= 4 and len(skipped) == 1
    driver = textwrap.dedent(
        """
        import json, os, runpy, sys, traceback
        failures = []
        for where, code in json.load(sys.stdin):
            os.chdir(where)
            try:
                exec(compile(code, f"README snippet in {where}", "exec"), {"__name__": "__main__"})
            except BaseException:
                failures.append(traceback.format_exc())
        print(json.dumps(failures))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", driver],
        input=json.dumps(runnable),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    failures = json.loads(res.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(failures)
    assert (tmp_path / "snippet0").exists()


def _gain(stem: str, model: str, degradation: str = "bicubic") -> str:
    data = json.loads((RESULTS / f"{stem}.json").read_text())
    [block] = [s for s in data["sets"] if s["degradation"] == degradation]
    return f"{block['summary'][model]['mean_gain_vs_bicubic_db']:+.2f}"


def test_headline_gains_are_the_results_files_numbers():
    rows = {
        line.split("|")[1].strip(): line
        for line in README.split("## Where it stands", 1)[1].split("\n## ", 1)[0].splitlines()
        if line.startswith("| ")
    }
    x2 = next(v for k, v in rows.items() if k.startswith("×2, 10 leave-one-source-out"))
    x4 = rows["×4, the same"]
    for row, stem in ((x2, "faithful"), (x4, "faithful_x4")):
        expected = (
            f"**{_gain(stem, 'default')} dB** ({_gain(stem, 'default + --degradation bicubic')}"
        )
        assert expected in row, (expected, row)
        ensemble = _gain(stem.replace("faithful", "faithful_ensemble"), "default + --ensemble")
        assert ensemble in row, (ensemble, row)
