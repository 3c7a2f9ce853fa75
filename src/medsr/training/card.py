"""What ``medsr export`` adds to a model card so that whoever receives the weights can tell what
they were trained on and for, without a human completing it (the shipped cards get the same keys
from ``scripts/write_cards.py``):

* ``recipe`` — the training recipe with every path reduced to its file name and every
  ``patient`` label replaced by ``patient-1``, ``patient-2``… (paths and labels can hold user or
  patient names); ``corpus:NAME`` entries stay as they are;
* ``training_data.files`` — ``{name, split, sha256}`` of each training and validation file,
  recorded at training time (:func:`medsr.training.data.file_records`);
* ``software`` — medsr, torch, Lightning and Python versions the run trained with;
* ``summary``, ``intended_use``, ``limitations``, ``out_of_scope`` — the recipe's ``card``
  section when it has them, else defaults made from the run (research use only; the files,
  modalities and degradation trained for; a validation below its baseline said; not for
  diagnosis, nor for images unlike the training data);
* ``training_data_licences`` — the package and licence of each development-corpus file
  (:func:`medsr.training.corpus.corpus_source`); the user's own files: licence unknown, to state;
* ``training`` — recipe file, how, steps, warm start, hardware, the degradation in words.
"""

from __future__ import annotations

import copy
import platform
import re
from typing import Any

from medsr.models.cards import (
    RESEARCH_USE,
    TEXTURE_NOTE,
    architecture_summary,
    validation_baseline,
)

__all__ = [
    "complete_card",
    "data_licences",
    "degradation_text",
    "hardware_text",
    "recipe_for_card",
    "software_versions",
]

#: recipe keys that hold a path (besides ``data.files[].path`` and ``data.val_files[].path``)
PATH_KEYS = (("model", "init"), ("gan", "generator_init"), ("distill", "teacher"),
             ("trainer", "out_dir"))  # fmt: skip


def software_versions() -> dict[str, str | None]:
    """The versions a run trains with (recorded in its checkpoints, then in the card)."""
    from medsr._version import __version__

    out: dict[str, str | None] = {"medsr": __version__}
    for name in ("torch", "lightning"):
        try:
            out[name] = str(__import__(name).__version__)
        except Exception:  # pragma: no cover - both are training dependencies
            out[name] = None
    out["python"] = platform.python_version()
    return out


def hardware_text(device: Any, processes: int = 1) -> str:
    """Where a run trains (recorded in its checkpoints, then in the card's ``training.hardware``):
    the GPU's name, or the CPU's architecture and torch's thread count; ``processes`` > 1: DDP."""
    import torch

    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        name = torch.cuda.get_device_name(device)
    elif kind == "cpu":
        name = f"CPU ({platform.machine() or 'unknown'}, torch threads: {torch.get_num_threads()})"
    else:
        name = kind
    return f"{processes} processes, each on {name}" if processes > 1 else name


def _file_name(path: str) -> str:
    """``path`` reduced to its last part (``corpus:NAME`` kept: a development-corpus name)."""
    text = path.strip()
    if text.startswith("corpus:"):
        return text
    parts = [p for p in re.split(r"[\\/]+", text) if p]
    return parts[-1] if parts else text


def recipe_for_card(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` (a :meth:`Config.to_dict`) safe to share: paths reduced to file names, patient
    labels pseudonymised (same label, same pseudonym; in order of first appearance)."""
    out = copy.deepcopy(recipe)
    data = out.get("data") or {}
    patients: dict[str, str] = {}
    for key in ("files", "val_files"):
        for entry in data.get(key) or []:
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("path"), str):
                entry["path"] = _file_name(entry["path"])
            label = entry.get("patient")
            if label is not None:
                entry["patient"] = patients.setdefault(str(label), f"patient-{len(patients) + 1}")
    for section, key in PATH_KEYS:
        sec = out.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            sec[key] = _file_name(sec[key])
    return out


def _fraction(value: Any) -> str:
    return f"{float(value):.0%}"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items())


def _kind_text(d: dict[str, Any], modalities: list[str]) -> str:
    kind = str(d.get("kind"))
    params = dict(d.get("params") or {})
    if kind == "default":
        from medsr.modality import default_kind, modality_group

        usual = ", ".join(
            f"{g} {default_kind(m)}" for g, m in {modality_group(m): m for m in modalities}.items()
        )
        text = "each modality's usual physics" + (f" ({usual})" if usual else "")
        frac = params.get("bicubic_fraction")
        if isinstance(frac, dict):
            text = f"plain antialiased bicubic on a fraction of the patches by group ({_params(frac)}), else {text}"
        elif frac:
            text = (
                f"plain antialiased bicubic on {_fraction(frac)} of the patches, {text} on the rest"
            )
        return text
    if kind == "compose":
        return " then ".join(_kind_text(s, modalities) for s in d.get("steps") or [])
    return kind + (f" ({_params(params)})" if params else "")


def degradation_text(card: dict[str, Any]) -> str | None:
    """The degradation a model was trained for, in words (its card's ``degradation``,
    ``low_band`` and ``data_consistency``)."""
    d = card.get("degradation")
    if not isinstance(d, dict):
        return None
    if d.get("description"):  # slice interpolation: no physics, a slice removed
        return str(d["description"])
    modalities = list((card.get("training_data") or {}).get("modalities") or [])
    text = _kind_text(d, modalities)
    blur = d.get("hr_blur")
    if isinstance(blur, dict):
        text += (
            f"; a softer reconstruction kernel (sigma {blur.get('sigma')} HR px) on "
            f"{_fraction(blur.get('fraction', 0))} of the {', '.join(blur.get('groups') or [])} "
            "patches, in the target and the input alike"
        )
    noise = d.get("hr_noise")
    if isinstance(noise, dict):
        text += (
            f"; scanner noise in the target and the input on {_fraction(noise.get('fraction', 0))} "
            f"of the patches ({', '.join(noise.get('groups') or [])})"
        )
    low_band = card.get("low_band")
    if isinstance(low_band, dict) and low_band.get("base"):
        text += (
            f"; trained behind the low-band guard (the output's low band is {low_band['base']}'s)"
        )
    if card.get("data_consistency"):
        text += f"; trained through {card['data_consistency']} data consistency"
    return text


def _default_limitations(card: dict[str, Any], unvalidated: list[str]) -> list[str]:
    data = card.get("training_data") or {}
    n_train, n_val = len(data.get("train_files") or []), len(data.get("val_files") or [])
    mods = ", ".join(data.get("modalities") or []) or "unrecorded modalities"
    out = [
        f"Trained on {n_train} file{'s' if n_train != 1 else ''} ({mods})"
        + (
            f" and validated on {n_val} other{'s' if n_val != 1 else ''}"
            if n_val
            else "; no validation files, so its quality is unmeasured"
        )
        + ": expect other results on other scanners, anatomy, protocols and noise levels."
    ]
    if unvalidated:
        out.append(
            f"Modality groups without validation files ({', '.join(unvalidated)}): their quality "
            "is unmeasured."
        )
    gain = (card.get("metrics") or {}).get("val_psnr_gain")
    if isinstance(gain, (int, float)) and gain < 0:
        out.append(
            f"Below {validation_baseline(card)} on its validation images (val PSNR gain {gain:+.2f} dB): "
            "use it for comparison, not for images."
        )
    elif gain is None:
        out.append("No validation metrics were recorded.")
    if card.get("kind", "super-resolution") == "super-resolution":
        text = degradation_text(card)
        if text:
            out.append(
                f"It assumes inputs degraded as in training ({text}); other degradations are "
                "out of distribution."
            )
    out.append(TEXTURE_NOTE)
    return out


def _default_summary(card: dict[str, Any]) -> str:
    data = card.get("training_data") or {}
    n = len(data.get("train_files") or [])
    mods = ", ".join(data.get("modalities") or [])
    what = f"{card.get('task') or 'supervised'} training" + (
        f" (recipe {card['name']!r})" if card.get("name") else ""
    )
    return (
        f"{architecture_summary(str(card['architecture']), card.get('kwargs') or {}, card.get('scale'))}"
        f"; {card.get('kind', 'super-resolution')} model from `medsr train`, {what} on {n} "
        f"file{'s' if n != 1 else ''}{' (' + mods + ')' if mods else ''}."
    )


def _default_intended_use(card: dict[str, Any]) -> str:
    data = card.get("training_data") or {}
    mods = ", ".join(data.get("modalities") or []) or "the"
    scale = f" x{card['scale']}" if card.get("scale") else ""
    return (
        f"{RESEARCH_USE} Made for{scale} {card.get('kind', 'super-resolution')} of {mods} images "
        "like its training data (training_data), degraded as it was trained for (training.degradation)."
    )


def _default_out_of_scope(card: dict[str, Any]) -> list[str]:
    data = card.get("training_data") or {}
    mods = ", ".join(data.get("modalities") or []) or "its training data's"
    out = [
        "Diagnosis, screening or any clinical decision on its output alone: a derived image, not "
        "a measurement (research use only; not a medical device).",
        f"Images unlike its training data: modalities other than {mods}, other anatomy, "
        "scanners, protocols or noise levels (validated on the validation files only).",
    ]
    if card.get("kind", "super-resolution") == "super-resolution":
        out.append(
            "Inputs degraded otherwise than trained for (training.degradation); measurements "
            "finer than the input's resolution."
        )
    return out


def _corpus_names(recipe: dict[str, Any] | None) -> set[str]:
    """The files a recipe names as development-corpus files (``corpus:NAME``)."""
    data = (recipe or {}).get("data") or {}
    out = set()
    for entry in [*(data.get("files") or []), *(data.get("val_files") or [])]:
        path = str(entry.get("path", "")) if isinstance(entry, dict) else str(entry)
        if path.strip().startswith("corpus:"):
            out.add(path.strip().removeprefix("corpus:"))
    return out


def data_licences(names: list[str], corpus: set[str]) -> list[dict[str, Any]]:
    """``training_data_licences``: the files of ``names`` grouped by the package they ship in,
    with its licence (:func:`medsr.training.corpus.corpus_source`) when the recipe named them as
    development-corpus files (``corpus``); the others (the user's own, even when named like a
    corpus file) under licence ``unknown``."""
    from medsr.training.corpus import corpus_source

    groups: dict[tuple[str, str, str], list[str]] = {}
    for name in dict.fromkeys(names):
        src = (corpus_source(name) if name in corpus else None) or (
            "not in the development corpus",
            "unknown",
            "not recorded: state it in the card",
        )
        groups.setdefault(src, []).append(name)
    return [
        {"package": p, "licence": lic, "stated_in": where, "files": files}
        for (p, lic, where), files in sorted(groups.items())
    ]


def complete_card(
    card: dict[str, Any], info: dict[str, Any], *, files_note: str | None = None
) -> dict[str, Any]:
    """Add the recipe, software, training entry and words (module docstring) to ``card`` (built
    from a checkpoint's ``"medsr"`` entry ``info``) and return it."""
    recipe = info.get("config") if isinstance(info.get("config"), dict) else None
    words = (recipe or {}).get("card") or {}
    data = info.get("data") or {}
    if recipe is not None:
        card["recipe"] = recipe_for_card(recipe)
    if files_note:
        card["training_data"]["files_note"] = files_note
    if info.get("software"):
        card["software"] = dict(info["software"])
    card["training"] = {
        "recipe": [info["recipe_file"]] if info.get("recipe_file") else [],
        "how": f"medsr train {info.get('recipe_file') or '<recipe>'}, then medsr export",
        "steps": card.get("steps"),
        "epochs": card.get("epochs"),
        "warm_start": info.get("init"),
        "hardware": info.get("hardware"),
        "degradation": degradation_text(card),
        "data": f"{len(card['training_data']['train_files'])} training and "
        f"{len(card['training_data']['val_files'])} validation files (training_data.files: "
        "names and sha256)",
    }
    card["summary"] = words.get("summary") or _default_summary(card)
    card["intended_use"] = words.get("intended_use") or _default_intended_use(card)
    card["limitations"] = list(words.get("limitations") or []) or _default_limitations(
        card, list(data.get("unvalidated_groups") or [])
    )
    card["out_of_scope"] = list(words.get("out_of_scope") or []) or _default_out_of_scope(card)
    card["training_data_licences"] = data_licences(
        [*card["training_data"]["train_files"], *card["training_data"]["val_files"]],
        _corpus_names(recipe),
    )
    return card
