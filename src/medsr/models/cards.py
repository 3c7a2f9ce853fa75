"""Model cards in words: what the shipped cards (``scripts/write_cards.py``) and the cards that
``medsr export`` writes (:mod:`medsr.training.card`) say alike, and the essentials
``medsr info WEIGHTS.safetensors`` shows.

Reading a card never loads tensors or imports torch: :func:`card_essentials` works on the dict
:func:`medsr.models.weights.read_card` returns.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ARCHITECTURES",
    "RESEARCH_USE",
    "TEXTURE_NOTE",
    "architecture_summary",
    "card_essentials",
    "validation_baseline",
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
