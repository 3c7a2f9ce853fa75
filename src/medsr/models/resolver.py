"""The one model resolver: a name, a shipped name or a weights file → one :class:`LoadedModel`.

Every part of medsr that takes a ``model`` argument (the CLI, the API, the web service, batch,
PACS, safeguards, provenance, slice interpolation, zero-shot fine-tuning) parses it here, once::

    from medsr.models.resolver import resolve_model, list_pretrained

    m = resolve_model("default-x2")            # shipped weights (medsr/weights/default-x2.safetensors)
    m = resolve_model("runs/x/best.safetensors", scale=2)   # a weights file with its model card
    m = resolve_model("lanczos", scale=2)      # a classical interpolator (registry name)
    m = resolve_model(None, scale=4)           # the default for ×4 (default-x4, else bicubic)
    m = resolve_model(None, scale=2, physics="kspace")   # default-x2-kspace when shipped
    m.kind, m.checksum, m.card, m.net          # the network is loaded on first use of .net

What a :class:`LoadedModel` carries:

* ``kind`` — ``"in-plane"`` (a learned upscaler), ``"classical"`` (an interpolator without
  weights), ``"slice-interpolator"`` (predicts the slice between two), ``"through-plane"`` (1-D
  axial models). Callers ask for the kinds they can run (``kinds=``) and get one clear error
  otherwise.
* ``checksum`` — the one identity of the weights: ``sha256:<hex>`` of the file's bytes, or
  ``classical:<name>`` for a model without weights. Provenance, batch journals and PACS
  derivation keys all use it.
* ``card`` — the model card (architecture, kwargs, scale, normalisation, training data,
  metrics); for classical models a minimal one.
* ``net`` — the ``torch.nn.Module``, built once per LoadedModel (lazily: validating a name, or
  reading its card, loads no tensors). Test-time augmentation, uncertainty maps and batches reuse
  one LoadedModel, so the weights are read once.

Following timm's ``create_model`` / ``list_pretrained``: :func:`list_pretrained` lists every
shipped weights file (in-plane upscalers and slice interpolators alike), and
:func:`medsr.models.registry.create_model` stays the constructor of bare architectures.
"""

from __future__ import annotations

import hashlib
import numbers
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from medsr.errors import InvalidParameterError, UnknownModelError

__all__ = [
    "KINDS",
    "SCALES",
    "LoadedModel",
    "check_scale",
    "default_model_name",
    "file_checksum",
    "list_pretrained",
    "physics_default",
    "resolve_model",
    "shipped_weights",
]

#: in-plane factors every in-plane model and front end accepts
SCALES = (2, 3, 4)
KINDS = ("in-plane", "classical", "slice-interpolator", "through-plane")
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
_SUFFIX = ".safetensors"


def check_scale(scale: Any, allowed: tuple[int, ...] = SCALES) -> int:
    """``scale`` as an int when it is one of ``allowed``; one clear error otherwise (the only
    place a scale is validated)."""
    # int, float and NumPy's numbers (np.int64 from an array); not a bool
    value = float(scale) if isinstance(scale, numbers.Real) and not isinstance(scale, bool) else 0.5
    if not (value.is_integer() and int(value) in allowed):
        raise InvalidParameterError(
            f"scale must be one of {', '.join(map(str, allowed))}; got {scale!r}"
        )
    return int(value)


@lru_cache(maxsize=128)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size/mtime: a changed file re-hashes
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_checksum(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file's bytes (cached while its size and mtime stay the same)."""
    p = Path(path).resolve()
    st = p.stat()
    return "sha256:" + _sha256(str(p), st.st_size, st.st_mtime_ns)


def _kind_of_class(cls: Any) -> str:
    k = getattr(cls, "kind", "upscaler")
    if k == "slice-interpolator":
        return "slice-interpolator"
    if k == "interpolator-1d":
        return "through-plane"
    if k != "upscaler":
        return str(k)
    return "in-plane" if getattr(cls, "learned", True) else "classical"


def shipped_weights() -> dict[str, Path]:
    """Name → path of every shipped weights file (a folder listing: no card read, nothing hashed)."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.name.removesuffix(_SUFFIX): p for p in sorted(WEIGHTS_DIR.glob("*" + _SUFFIX))}


def default_model_name(scale: int, physics: str | None = None) -> str:
    """The model that runs when none is named: ``default-x{scale}-{physics}`` when the physics
    is stated and such weights are shipped (e.g. ``default-x2-kspace``, trained on k-space
    truncation for ``--degradation kspace``), else ``default-x{scale}`` when shipped, else
    ``bicubic``."""
    shipped = shipped_weights()
    if physics:
        specific = f"default-x{int(scale)}-{physics}"
        if specific in shipped:
            return specific
    name = f"default-x{int(scale)}"
    return name if name in shipped else "bicubic"


def physics_default(loaded: LoadedModel, scale: int, physics: str | None) -> str | None:
    """The default that runs instead of ``loaded`` for ``physics``: its name when ``loaded`` is
    an unnamed default (``by_default``) and :func:`default_model_name` picks another one for that
    physics, else ``None`` (a named model is never switched)."""
    if not loaded.by_default:
        return None
    name = default_model_name(scale, physics)
    return None if name == loaded.name else name


@dataclass(eq=False)
class LoadedModel:
    """One resolved model: what it is, where it came from, its card, identity and network."""

    name: str
    kind: str
    card: dict[str, Any]
    checksum: str
    path: Path | None = None
    source: str = ""
    device: str = "cpu"
    #: resolved from ``None``: the default, which may follow the stated physics
    #: (:func:`default_model_name`; :class:`medsr.inference.planes.PlaneUpscaler` switches it)
    by_default: bool = False
    #: resolved by medsr for inference alone (``resolve_model(..., inference_only=True)``): its
    #: network may be one that an earlier upscaler of the same weights file in this process built
    #: and prepared (:func:`medsr.inference.planes._reuse_network`), never to be trained
    inference_only: bool = False
    _net: Any = field(default=None, repr=False)

    @property
    def learned(self) -> bool:
        return self.kind != "classical"

    @property
    def shipped(self) -> bool:
        return self.path is not None and self.path.parent == WEIGHTS_DIR

    @property
    def low_band_base(self) -> str:
        """The interpolator whose low band the model keeps (its card's ``low_band.base``,
        ``bicubic`` when none): also the baseline its validation gain was measured over."""
        return str((self.card.get("low_band") or {}).get("base", "bicubic"))

    @property
    def data_consistency(self) -> str | None:
        """The data-consistency step the network was trained through and always runs through
        (its card's ``data_consistency``: ``kspace``), or None."""
        kind = self.card.get("data_consistency")
        return str(kind) if kind else None

    @property
    def scale(self) -> int | None:
        s = self.card.get("scale")
        return int(s) if s is not None else None

    @property
    def min_plane(self) -> int:
        """The smallest input plane side (LR px) the network is run on: its training patch
        (the card's ``training_data.patch_size``, HR px, over its scale); 0 when unknown.

        A smaller plane is out of the regime the network was trained in — ``default-x4``'s
        attention pooled a 16² input into a single value and exaggerated structure there (the
        hallucination test's sham lesion on ``MR_small`` at ×4: 0.58 of a lesion's contrast with
        consistency off, 0.28 padded; limit 0.35) — so
        :class:`medsr.inference.planes.PlaneUpscaler` pads it by reflection to this size for the
        network and crops the detail back (the base and the guards run on the plane itself).
        """
        patch = (self.card.get("training_data") or {}).get("patch_size")
        if not self.learned or not patch or not self.scale:
            return 0
        return int(patch) // int(self.scale)

    @property
    def net(self) -> Any:
        """The network (built, weights loaded, eval mode) — once per LoadedModel."""
        if self._net is None:
            if self.path is not None:
                from medsr.models.weights import load_model

                net, _ = load_model(self.path, device=self.device)
            else:
                from medsr.models.registry import create_model

                kwargs = dict(self.card.get("kwargs") or {})
                net = create_model(self.card["architecture"], **kwargs).eval()
            net.card = self.card
            self._net = net
        return self._net

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (``medsr models --json``, the web service's model list)."""
        card = self.card
        metrics = card.get("metrics") or {}
        return {
            "name": self.name,
            "kind": self.kind,
            "learned": self.learned,
            "shipped": self.shipped,
            "scale": self.scale,
            "architecture": card.get("architecture"),
            "checksum": self.checksum,
            "val_psnr_gain_db": metrics.get("val_psnr_gain"),
            "description": card.get("description") or "",
        }


def _from_file(path: Path, source: str, name: str | None, device: str) -> LoadedModel:
    from medsr.models.registry import get_model_class
    from medsr.models.weights import read_card

    card = read_card(path)  # checked there: architecture, kwargs, scale
    try:
        cls = get_model_class(str(card["architecture"]))
    except UnknownModelError:
        raise UnknownModelError(
            f"'{path.name}' holds a {card['architecture']!r} network, an architecture this medsr "
            "does not have (medsr models lists them)"
        ) from None
    card = dict(card)
    card["name"] = name or str(card.get("name") or path.name.removesuffix(_SUFFIX))
    card.setdefault("kind", _kind_of_class(cls))
    return LoadedModel(
        name=card["name"], kind=_kind_of_class(cls), card=card, checksum=file_checksum(path),
        path=path, source=source, device=device,
    )  # fmt: skip


def resolve_model(
    model: str | os.PathLike[str] | LoadedModel | None = None,
    *,
    scale: int | None = None,
    kinds: tuple[str, ...] | None = None,
    device: str = "cpu",
    in_channels: int = 1,
    physics: str | None = None,
    inference_only: bool = False,
) -> LoadedModel:
    """Parse ``model`` once into a :class:`LoadedModel`.

    Args:
        model: a :class:`LoadedModel` (returned as is, after the checks), ``None`` (the default
            in-plane model for ``scale``), a shipped name (``medsr models``), a weights file
            (``.safetensors`` with its card), or a registered architecture name (classical
            interpolators; learned architectures have no weights and are refused, except for
            the slice-interpolation baselines that have none).
        scale: the factor the caller will run; a model trained for another factor is refused.
            Classical models are built for it.
        kinds: kinds the caller can run (``None``: any).
        device: where the network is put when first used.
        in_channels: channels of a classical model.
        physics: with ``model=None``, the stated physics' kind (``kspace``): its own default
            when one is shipped (:func:`default_model_name`).
        inference_only: the caller only runs the network, never trains it (medsr's upscaling
            pipeline): it may share one already built (:attr:`LoadedModel.inference_only`). A
            ``LoadedModel`` passed in keeps its own setting.
    """
    by_default = model is None
    if isinstance(model, LoadedModel):
        loaded = model
    else:
        if model is None:
            if scale is None:
                raise InvalidParameterError("no model and no scale: cannot pick a default model")
            model = default_model_name(check_scale(scale), physics)
        text = os.fspath(model) if isinstance(model, os.PathLike) else str(model)
        if not text.strip():
            raise InvalidParameterError("the model name is empty")
        shipped = shipped_weights().get(text.lower())
        path = Path(text)
        if shipped is not None:
            loaded = _from_file(shipped, text, text.lower(), device)
        elif text.endswith(_SUFFIX) or path.is_file():
            if not path.is_file():
                raise UnknownModelError(f"weights file '{path}' does not exist")
            loaded = _from_file(path, text, None, device)
        else:
            from medsr.models.registry import get_model_class

            try:
                cls = get_model_class(text)
            except UnknownModelError:
                raise UnknownModelError(_unknown_model_message(text)) from None
            kind = _kind_of_class(cls)
            name = text.lower()
            if kind != "classical":  # a learned architecture without weights invents anatomy
                raise InvalidParameterError(
                    f"model {text!r} has no trained weights bundled; pass a .safetensors file, a "
                    "shipped model (medsr models) or a classical interpolator (bicubic, lanczos, kspace...)"
                )
            card: dict[str, Any] = {"name": name, "architecture": name, "kind": kind}
            if kind == "classical":  # built for the caller's scale (×2 when none is given)
                card.update(normalization={"kind": "identity"}, kwargs={"in_channels": in_channels})
                if scale is not None:
                    card["scale"] = check_scale(scale)
                    card["kwargs"]["scale"] = card["scale"]
            loaded = LoadedModel(
                name=name,
                kind=kind,
                card=card,
                checksum=f"classical:{name}",
                source=text,
                device=device,
            )
    if by_default:
        loaded.by_default = True
    if inference_only and not isinstance(model, LoadedModel):
        loaded.inference_only = True
    if kinds is not None and loaded.kind not in kinds:
        want = " or ".join(kinds)
        article = "an" if loaded.kind[:1] in "aeiou" else "a"
        raise InvalidParameterError(
            f"model {loaded.name!r} is {article} {loaded.kind} model; this needs {want}"
        )
    if scale is not None and loaded.kind in ("in-plane", "classical"):
        s = check_scale(scale)
        if loaded.scale is not None and loaded.scale != s:
            where = "shipped model {!r} was" if loaded.shipped else "weights {!r} were"
            raise InvalidParameterError(
                f"{where.format(loaded.name)} trained for ×{loaded.scale}, not ×{s}"
            )
    return loaded


def _unknown_model_message(text: str) -> str:
    """What a user can name instead of ``text``: the shipped models (closest first when one is
    close), the classical interpolators, or a weights file. Bare learned architectures are not
    offered: they have no weights (:func:`resolve_model` refuses them)."""
    import difflib

    from medsr.models.registry import list_models

    shipped = sorted(shipped_weights())
    classical = list_models(learned=False)
    close = difflib.get_close_matches(text.lower(), shipped + classical, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return (
        f"unknown model {text!r}{hint}; shipped: {', '.join(shipped)}; classical: "
        f"{', '.join(classical)}; or a .safetensors weights file (medsr models lists them)"
    )


def list_pretrained(kind: str | None = None) -> list[LoadedModel]:
    """Every shipped weights file (cards only: no tensors loaded), optionally of one ``kind``."""
    out = [_from_file(p, name, name, "cpu") for name, p in shipped_weights().items()]
    return [m for m in out if kind is None or m.kind == kind]
