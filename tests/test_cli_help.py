"""CLI help texts against behaviour: the examples, options and recipes the help shows exist and
work, and the advice an error gives leads somewhere."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import typer
from typer.testing import CliRunner

from medsr.cli import app
from tests._entry import run_medsr
from tests.conftest import corpus_path

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def medsr(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real entry point in a process of its own (exit codes and stderr as a user sees
    them; :func:`tests._entry.run_medsr`)."""
    return run_medsr(*args)


def _commands(cmd, path=("medsr",)):
    """Every command of the CLI (groups included) with its path, e.g. ``("medsr", "pacs", "list")``."""
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_examples_use_real_options_and_recipes():
    """Every ``medsr …`` example in a command's help or epilog names options that command has
    and recipes (``configs/*.yaml``) that exist: ``medsr train --help`` showed
    ``configs/rdn.yaml``, which is ``configs/rdn-x2.yaml``."""
    root = ROOT
    top = typer.main.get_command(app)
    by_path = dict(_commands(top))
    checked = 0
    for _path, cmd in by_path.items():
        text = f"{cmd.help or ''}\n{cmd.epilog or ''}"
        for example in re.findall(r"medsr [^;\n]+", text):
            words = example.split()
            n = 1  # the longest command path the example starts with
            while n < len(words) and tuple(words[: n + 1]) in by_path:
                n += 1
            target = by_path[tuple(words[:n])]
            known = {o for p in target.params for o in (*p.opts, *p.secondary_opts)}
            for word in words[n:]:
                if word.startswith("--"):
                    assert word.split("=")[0] in known, f"{example!r}: {target.name} has no {word}"
                if word.startswith("configs/"):
                    assert (root / word).is_file(), f"{example!r}: {word} does not exist"
            checked += 1
    assert checked >= 20


def test_demo_help_names_what_the_demo_upscales():
    """``medsr demo --help`` said "CT and MR slices"; the demo upscales a radiograph and an
    ultrasound image too (README: "corpus CT, MR, radiograph and ultrasound images")."""
    from medsr.demo import DEMO_CASES

    words = {"CT": "CT", "MR": "MR", "CR": "radiograph", "US": "ultrasound"}
    res = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "300"})
    assert res.exit_code == 0
    for label, _names, _degradation in DEMO_CASES:
        assert words[label] in res.output, (label, res.output)


def test_thick_slice_physics_points_at_what_works(tmp_path):
    """``--degradation thick-slice`` in-plane said "use it with --through-plane"; doing so is
    refused ("through-plane upscaling models the slice profile instead"): the advice must name
    the options that state a slice profile, not send the user in a circle."""
    src = corpus_path("aniso_vox.nii.gz")
    res = medsr("upscale", str(src), str(tmp_path / "out.nii.gz"), "--degradation", "thick-slice")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--through-plane" in res.stderr and "--profile" in res.stderr, res.stderr
    assert "use it with --through-plane" not in res.stderr
    assert not (tmp_path / "out.nii.gz").exists()


def test_interpolate_help_offers_only_models_it_can_run(tmp_path):
    """``medsr interpolate --help`` listed ``interp-gan`` and ``fast-ddpm`` among the models
    like ``interp-cnn``; neither ships weights (each name alone is refused): the help says so."""
    res = runner.invoke(app, ["interpolate", "--help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "ship no weights" in text, text
    for name in ("interp-gan", "fast-ddpm"):
        out = tmp_path / "x.nii.gz"
        refused = medsr(
            "interpolate", str(corpus_path("aniso_vox.nii.gz")), str(out), "--model", name
        )
        assert refused.returncode == 2 and "no trained weights" in refused.stderr
        assert not out.exists()


def test_evaluate_help_names_every_through_plane_method_it_accepts():
    """``medsr evaluate --help`` listed ``linear-z, cubic-z, ...`` for thick-slice; ``linear``,
    ``cubic`` and ``bicubic`` are accepted for them (and shipped slice interpolators run too):
    the help names every accepted spelling."""
    from medsr.models.resolver import list_pretrained
    from medsr.reports.through_plane import _THROUGH_PLANE_ALIASES, THROUGH_PLANE_METHODS

    command = typer.main.get_command(app).commands["evaluate"]
    text = next(p.help for p in command.params if "--models" in p.opts)
    thick = text.split("thick-slice", 1)[1].split("--interpolation", 1)[0]
    accepted = {
        *THROUGH_PLANE_METHODS,
        *_THROUGH_PLANE_ALIASES,
        *(m.name for m in list_pretrained("slice-interpolator")),
    }
    for name in accepted:
        assert re.search(rf"(?<![\w+-]){re.escape(name)}(?![\w+-])", thick), (name, thick)


def test_batch_consistency_help_says_what_makes_the_physics_known(tmp_path):
    """``medsr batch --help`` said auto projects "when the physics is known (an MR header)"; an MR
    header alone does not (the default --degradation is none): MR_small is only measured, as
    ``medsr upscale`` says. Both helps now name --degradation KIND / auto with an MR header."""
    import shutil

    import pydicom

    phrase = (
        "when the physics is known (--degradation KIND, or --degradation auto with an MR header)"
    )
    for command in ("upscale", "batch"):
        res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
        assert res.exit_code == 0
        assert phrase in " ".join(res.output.split()), (command, res.output)
    (tmp_path / "in").mkdir()
    shutil.copy(corpus_path("MR_small.dcm"), tmp_path / "in" / "MR_small.dcm")
    res = runner.invoke(
        app, ["batch", str(tmp_path / "in"), str(tmp_path / "out"), "--model", "bicubic"]
    )
    assert res.exit_code == 0, res.output
    written = pydicom.dcmread(tmp_path / "out" / "MR_small.dcm", stop_before_pixels=True)
    assert "consistency auto (measured only: physics not stated)" in written.DerivationDescription


def test_precision_is_one_option_on_every_command_that_runs_a_model():
    """`medsr batch`, `medsr pacs upscale` and `medsr pacs watch` take `--precision` as
    `medsr upscale` does: the same values, the same default (fp32), the same help; only
    `medsr upscale` had it, so a batch over an archive could not ask for `auto`."""
    from medsr.inference.precision import PRECISION_CHOICES, PRECISION_HELP

    by_path = dict(_commands(typer.main.get_command(app)))
    paths = [("medsr", "upscale"), ("medsr", "batch"), ("medsr", "pacs", "upscale"),
             ("medsr", "pacs", "watch")]  # fmt: skip
    for path in paths:
        [option] = [p for p in by_path[path].params if "--precision" in p.opts]
        assert (option.default, option.help) == ("fp32", PRECISION_HELP), path
    assert all(choice in PRECISION_HELP for choice in PRECISION_CHOICES)


def test_every_front_end_says_what_degradation_default_means():
    """``--degradation default`` is accepted by upscale, batch and the PACS bridge alike; the
    PACS bridge's help named only a kind, auto and none."""
    root = typer.main.get_command(app)
    commands = {
        "upscale": root.commands["upscale"],
        "batch": root.commands["batch"],
        "pacs upscale": root.commands["pacs"].commands["upscale"],
        "pacs watch": root.commands["pacs"].commands["watch"],
    }
    for name, command in commands.items():
        text = next(p.help for p in command.params if "--degradation" in p.opts)
        assert "default (" in text and "MR kspace" in text, (name, text)


def test_degradation_help_is_made_from_the_physics_medsr_can_state():
    """Every upscaling front end's ``--degradation`` help names each kind a user can state and
    each modality's usual physics from the lists the pipeline uses (three hand-written copies
    of the list before); ``medsr degrade --kind`` names the noise kinds it accepts too."""
    from medsr.degradations import default_kind, list_degradations
    from medsr.modality import DEFAULT_KIND, IN_PLANE_PHYSICS, MODALITY_GROUPS
    from medsr.safeguards.operators import NO_FORWARD_MODEL, SUPPORTED

    assert set(IN_PLANE_PHYSICS) == set(SUPPORTED)
    assert set(DEFAULT_KIND) <= set(MODALITY_GROUPS)
    assert set(DEFAULT_KIND.values()) <= set(IN_PLANE_PHYSICS)
    assert default_kind("CR") == "radiograph" and default_kind("OT") == "bicubic"
    root = typer.main.get_command(app)
    for command in (
        root.commands["upscale"],
        root.commands["batch"],
        root.commands["pacs"].commands["upscale"],
        root.commands["pacs"].commands["watch"],
    ):
        text = next(p.help for p in command.params if "--degradation" in p.opts)
        for kind in IN_PLANE_PHYSICS:
            assert kind in text, (command.name, kind)
        for group, kind in DEFAULT_KIND.items():
            if kind != "bicubic":
                assert f" {kind}" in text.split("usual physics", 1)[1], (command.name, group)
    kinds = next(p.help for p in root.commands["degrade"].params if "--kind" in p.opts)
    for kind in set(list_degradations()) - {"default", "compose"}:
        assert kind in kinds, kind
    assert set(NO_FORWARD_MODEL) - {"compose"} <= set(list_degradations())
