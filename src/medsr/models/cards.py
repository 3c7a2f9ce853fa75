"""Model cards in words: what the shipped cards (``scripts/write_cards.py``) and the cards that
``medsr export`` writes (:mod:`medsr.training.card`) say alike, the essentials
``medsr info WEIGHTS.safetensors`` shows, and the whole card ``medsr models NAME`` prints.

The report sections (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019) —
:data:`REPORT_SECTIONS`: intended and out-of-scope uses, per-image and per-modality validation
results, caveats, software, the training data's licences and the weights' checksum — are checked
with the rest of the card (:func:`check_report_sections`). A shipped model's file cannot hold its
own checksum, and its tensors (and so its bytes) are pinned, so its report sections live in the
JSON twin beside it (``<name>.json``: the file's card plus the sections,
``scripts/card_sections.py`` writes them from ``benchmarks/results``); :func:`full_card` joins the
two when the twin's ``weights_sha256`` is the file's.

Reading a card never loads tensors or imports torch: :func:`card_essentials` works on the dict
:func:`medsr.models.weights.read_card` returns.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from medsr.models.card_schema import REPORT_SECTIONS, check_report_sections

__all__ = [
    "ARCHITECTURES",
    "REPORT_SECTIONS",
    "RESEARCH_USE",
    "TEXTURE_NOTE",
    "architecture_summary",
    "card_essentials",
    "card_markdown",
    "check_report_sections",
    "full_card",
    "validation_baseline",
    "weights_sha256",
]

#: how a card's summary names a network family (its paper); others: the class docstring's first line
ARCHITECTURES = {
    "rlfn": "RLFN (Kong et al., CVPRW 2022: residual local feature blocks + ESA)",
    "srcnn": "SRCNN 9-1-5 (Dong et al., TPAMI 2016) on bicubic-upsampled input",
    "residual5": "light 5-layer residual CNN over bicubic",
    "vdsr": "VDSR (Kim et al., CVPR 2016: 20 conv layers, global residual over bicubic)",
    "srresnet": "SRResNet (Ledig et al., CVPR 2017: the SRGAN generator, 16 residual blocks)",
}

#: the constructor arguments a summary names (the network's size)
_SIZE_KEYS = ("num_features", "num_blocks", "global_residual")

#: every learned model's caveat (the shipped cards' limitations end with it too)
TEXTURE_NOTE = (
    "Learned models can change fine texture; check the consistency and uncertainty maps (--maps) and "
    "use --consistency on when the degradation is known."
)

#: what a card says when nobody stated the model's intended use
RESEARCH_USE = "Research use only; not validated for clinical use (not a medical device)."


def _describe_architecture(arch: str) -> str:
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch]
    try:  # the registry imports the model modules (torch): only for names not listed above
        from medsr.models.registry import get_model_class

        doc = (get_model_class(arch).__doc__ or "").strip()
    except Exception:  # an architecture this medsr does not have: its name alone
        return arch
    first = doc.split("\n\n")[0].replace("\n", " ").strip().rstrip(".")
    return f"{arch} ({first})" if first else arch


def architecture_summary(arch: str, kwargs: dict[str, Any], scale: int | None) -> str:
    """``"RLFN (Kong et al., …) (num_blocks 4, num_features 46), x2"``: the network, its size
    and factor, as every card's ``summary`` begins."""
    size = ", ".join(f"{k} {v}" for k, v in kwargs.items() if k in _SIZE_KEYS)
    return f"{_describe_architecture(arch)}{' (' + size + ')' if size else ''}" + (
        f", x{scale}" if scale else ""
    )


def validation_baseline(card: dict[str, Any]) -> str:
    """What a card's ``val_psnr_gain`` was measured over: a slice interpolator's linear midpoint,
    a through-plane model's cubic along z, else the card's ``metrics.baseline`` (k-space models:
    zero-filled k-space), its low-band guard's base, or bicubic."""
    if card.get("kind") == "slice-interpolator":
        return "linear (the neighbours' mean)"
    if card.get("kind") == "through-plane":
        return "cubic along z"
    m = card.get("metrics") or {}
    return str(m.get("baseline") or (card.get("low_band") or {}).get("base") or "bicubic")


def _gain(card: dict[str, Any]) -> str | None:
    m = card.get("metrics") or {}
    gain = m.get("val_psnr_gain")
    if not isinstance(gain, (int, float)):
        return None
    psnr = m.get("val_psnr")
    at = f"PSNR {psnr:.2f} dB, " if isinstance(psnr, (int, float)) else ""
    return f"{at}{gain:+.2f} dB vs {validation_baseline(card)} (normalised units)"


def card_essentials(card: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, text)`` rows of what a user needs before running weights: what the network is,
    what it is for, what it was trained on and for, how it validated, and its limitations."""
    rows: list[tuple[str, str]] = []

    def add(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            rows.append((label, str(value)))

    kwargs = card.get("kwargs") or {}
    add("name", card.get("name"))
    add("kind", card.get("kind"))
    add("summary", card.get("summary"))
    arch = str(card.get("architecture"))
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    add("architecture", f"{arch}({args})")
    add("scale", f"x{card['scale']}" if card.get("scale") else None)
    add(
        "intended use",
        card.get("intended_use")
        or f"not stated in the card ({RESEARCH_USE[:-1]}, as all of medsr)",
    )
    data = card.get("training_data") or {}
    train, val = list(data.get("train_files") or []), list(data.get("val_files") or [])
    mods = ", ".join(data.get("modalities") or []) or "modality not recorded"
    add("trained on", f"{len(train)} file(s), {mods}: {', '.join(train)}" if train else None)
    add("validated on", f"{len(val)} file(s): {', '.join(val)}" if val else "no validation files")
    files = data.get("files") or []
    if files:
        known = sum(1 for f in files if f.get("sha256"))
        add("file sha256", f"{known} of {len(files)} recorded (--json lists them)")
    add("validation", _gain(card))
    training = card.get("training") or {}
    degradation = training.get("degradation") if isinstance(training, dict) else None
    if not degradation:
        d = card.get("degradation") or {}
        degradation = d.get("description") or d.get("kind")
    add("degradation", degradation)
    low_band = card.get("low_band") or {}
    add("low-band guard", f"base {low_band.get('base')}" if low_band else None)
    add("data consistency", card.get("data_consistency"))
    norm = card.get("normalization") or {}
    add("normalisation", norm.get("kind"))
    steps = card.get("steps")
    add("steps", f"{steps} ({card.get('epochs')} epochs)" if card.get("epochs") else steps)
    software = card.get("software") or (
        training.get("software") if isinstance(training, dict) else None
    )
    if isinstance(software, dict) and software:
        add("trained with", ", ".join(f"{k} {v}" for k, v in software.items() if v))
    add("exported with", f"medsr {card['version']}" if card.get("version") else None)
    add("date", card.get("date"))
    for i, item in enumerate(card.get("limitations") or []):
        add("limitations" if i == 0 else "", f"- {item}")
    return rows


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 (hex) of a weights file's bytes (what a card's ``weights_sha256`` states)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def full_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole model card of the weights file ``path``: the card inside the file, the report
    sections of its JSON twin (``<stem>.json`` beside it) when the twin states this file's
    sha256 (a twin of other weights is ignored), and ``weights_sha256`` computed from the file."""
    from medsr.models.weights import read_card

    p = Path(path)
    card = dict(read_card(p))
    digest = weights_sha256(p)
    twin = p.with_suffix(".json")
    if twin.is_file():
        try:
            side = json.loads(twin.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            side = None
        if isinstance(side, dict) and side.get("weights_sha256") == digest:
            check_report_sections(side, twin.name)
            for key in REPORT_SECTIONS:
                if key in side and key not in card:
                    card[key] = side[key]
    card["weights_sha256"] = digest
    card.setdefault("name", p.name.removesuffix(".safetensors"))
    return card


def _fmt(value: Any, spec: str) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return format(value, spec) if numeric else "–"


def _validation_markdown(results: dict[str, Any]) -> list[str]:
    out = [f"Source: {results.get('source')}."]
    if results.get("protocol"):
        out.append(f"Protocol: {results['protocol']}")
    if results.get("machine"):
        out.append(f"Measured on: {results['machine']}")
    for entry in results.get("sets") or []:
        baseline = entry.get("baseline") or "baseline"
        out += [
            "",
            f"### {entry['set']}: x{entry.get('scale')}, {entry.get('degradation')} degradation, "
            f"run as `{entry.get('run_as')}`",
            "",
            f"| modality | images | mean gain vs {baseline} (dB) | worst gain (dB) |",
            "|---|---|---|---|",
        ]
        for mod, m in sorted((entry.get("per_modality") or {}).items()):
            out.append(
                f"| {mod} | {m.get('images')} | {_fmt(m.get('mean_gain_db'), '+.2f')} | "
                f"{_fmt(m.get('worst_gain_db'), '+.2f')} |"
            )
        out += [
            "",
            f"| image | modality | PSNR (dB) | SSIM | {baseline} PSNR (dB) | gain (dB) | "
            "error RMS low / high band |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in entry.get("images") or []:
            out.append(
                f"| {row['image']} | {row['modality']} | {_fmt(row.get('psnr_db'), '.2f')} | "
                f"{_fmt(row.get('ssim'), '.4f')} | {_fmt(row.get('baseline_psnr_db'), '.2f')} | "
                f"{_fmt(row.get('gain_db'), '+.2f')} | {_fmt(row.get('low_band_rms'), '.3g')} / "
                f"{_fmt(row.get('high_band_rms'), '.3g')} |"
            )
    return out


def card_markdown(card: dict[str, Any]) -> str:
    """``card`` (a :func:`full_card`) as Markdown, in the order of Mitchell et al.'s model cards:
    details, intended use, out of scope, training data, evaluation, caveats, software."""
    name = card.get("name") or "model"
    out = [f"# Model card: {name}", ""]
    if card.get("summary"):
        out += [str(card["summary"]), ""]
    out += ["## Model details", ""]
    for label, text in card_essentials(card):
        if label in ("name", "summary", "intended use", "trained on", "validated on") or not label:
            continue
        if label == "limitations":
            break
        out.append(f"- {label}: {text}")
    out.append(f"- weights sha256: {card.get('weights_sha256') or 'not computed'}")
    out += ["", "## Intended use", ""]
    out.append(str(card.get("intended_use") or f"Not stated in the card. {RESEARCH_USE}"))
    out += ["", "## Out of scope", ""]
    out += [f"- {t}" for t in card.get("out_of_scope") or ["Not stated in the card."]]
    data = card.get("training_data") or {}
    out += ["", "## Training data", ""]
    train, val = list(data.get("train_files") or []), list(data.get("val_files") or [])
    out.append(f"- trained on {len(train)} file(s): {', '.join(train) or 'not recorded'}")
    out.append(f"- validated on {len(val)} other file(s): {', '.join(val) or 'none'}")
    for lic in card.get("training_data_licences") or []:
        where = f"; {lic['stated_in']}" if lic.get("stated_in") else ""
        out.append(
            f"- licence {lic['licence']} ({lic['package']}{where}): {', '.join(lic['files'])}"
        )
    if not card.get("training_data_licences"):
        out.append("- licences of the training data: not recorded")
    out += ["", "## Evaluation (images never trained on)", ""]
    results = card.get("validation_results")
    if isinstance(results, dict) and results.get("sets"):
        out += _validation_markdown(results)
    else:
        gain = _gain(card)
        out.append(
            (f"At training, on the validation files: {gain}. " if gain else "")
            + "No per-image results recorded (benchmarks/faithful.py measures them)."
        )
    out += ["", "## Caveats and limitations", ""]
    items = list(card.get("caveats") or []) + list(card.get("limitations") or [])
    out += [f"- {t}" for t in items] or ["- none recorded"]
    out += ["", "## Software", ""]
    software = card.get("software") or {}
    if isinstance(software, dict) and software:
        out += [f"- {k}: {v if v is not None else 'not recorded'}" for k, v in software.items()]
    else:
        out.append(f"- medsr {card.get('version') or 'version not recorded'} (exported with)")
    return "\n".join(out) + "\n"
