"""``degradation`` section: how LR inputs are made from HR patches (and HR scanner noise)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from medsr.errors import InvalidParameterError
from medsr.training.config._checks import canonical_names, number_range, unit_fraction

#: modality groups :class:`HRNoiseConfig` can add scanner noise to
HR_NOISE_GROUPS = ("MR", "CT", "radiograph")


@dataclass
class HRNoiseConfig:
    """``degradation.hr_noise``: scanner noise in the HR target *and* (downsampled) in the LR.

    For a fraction of the training patches, noise the way each modality's scanner makes it is
    added to the HR patch **before** the LR is made from it
    (:class:`medsr.degradations.noise.RandomScannerNoise`), so the same realisation is in the
    target at full resolution and in the input after the degradation. The part of the noise
    above the LR's Nyquist frequency cannot be predicted from the input, so the loss teaches the
    network the conditional mean there (no texture made from noise) while the noise the input
    measured is kept, not smoothed away. Validation pairs are not noised (the validation set
    has real noisy images).

    Ranges (``[low, high]`` or one number) are drawn uniformly per patch (doses log-uniformly):

    * ``mr_sigma``: Rician (magnitude of complex Gaussian) σ per channel, normalised units
      (``minmax``: a fraction of the file's range);
    * ``ct_sigma_hu``: Gaussian σ in HU (converted with the CT normalisation's range);
      ``ct_nps_peak``: peak of the noise-power spectrum ``NPS(f) ∝ f·exp(−f²/f_c²)`` of
      filtered back-projection, cycles/pixel (correlated noise; ``null``: white);
    * ``radiograph_dose``: expected quanta per HR pixel at normalised intensity 1 (Poisson).
    """

    fraction: float = 0.3
    groups: list[str] = field(default_factory=lambda: list(HR_NOISE_GROUPS))
    mr_sigma: float | list[float] = field(default_factory=lambda: [0.005, 0.04])
    ct_sigma_hu: float | list[float] = field(default_factory=lambda: [4.0, 35.0])
    ct_nps_peak: float | list[float] | None = field(default_factory=lambda: [0.1, 0.35])
    radiograph_dose: float | list[float] = field(default_factory=lambda: [1000.0, 30000.0])

    def validate(self, where: str) -> None:
        unit_fraction(self.fraction, f"{where}.fraction")
        self.groups, bad = canonical_names(self.groups, HR_NOISE_GROUPS)
        if bad:
            raise InvalidParameterError(
                f"{where}.groups: no scanner-noise model for {', '.join(map(repr, bad))} "
                f"(choose from {', '.join(HR_NOISE_GROUPS)})"
            )
        number_range(self.mr_sigma, f"{where}.mr_sigma")
        number_range(self.ct_sigma_hu, f"{where}.ct_sigma_hu")
        if self.ct_nps_peak is not None:
            _lo, hi = number_range(self.ct_nps_peak, f"{where}.ct_nps_peak", positive=True)
            if hi > 0.5:
                raise InvalidParameterError(
                    f"{where}.ct_nps_peak must be ≤ 0.5 cycles/pixel (Nyquist), got {self.ct_nps_peak!r}"
                )
        number_range(self.radiograph_dose, f"{where}.radiograph_dose", positive=True)


@dataclass
class HRBlurConfig:
    """``degradation.hr_blur``: a softer reconstruction kernel in the HR target *and* the LR.

    Scanners reconstruct the same anatomy with kernels from sharp (bone, lung) to soft (brain,
    soft tissue), and a training source comes with the one kernel it was reconstructed with: a
    network that only sees one sharpness learns how sharp that modality "is" and sharpens every
    input to it, ringing at the edges of an image reconstructed softer. For a fraction of the
    patches of ``groups``, the HR patch is first blurred with an isotropic Gaussian of σ drawn
    uniformly from ``sigma`` (HR pixels) — the same patch made with a softer kernel — and becomes
    the target; the LR is made from it as usual. The network then has to read the sharpness off
    the input instead of assuming it. Validation pairs are not blurred.
    """

    fraction: float = 0.5
    groups: list[str] = field(default_factory=lambda: ["CT"])
    sigma: float | list[float] = field(default_factory=lambda: [0.3, 1.5])

    def validate(self, where: str) -> None:
        from medsr.modality import MODALITY_GROUPS

        unit_fraction(self.fraction, f"{where}.fraction")
        self.groups, bad = canonical_names(self.groups, MODALITY_GROUPS)
        if bad:
            raise InvalidParameterError(
                f"{where}.groups: unknown modality group {', '.join(map(repr, bad))} "
                f"(choose from {', '.join(MODALITY_GROUPS)})"
            )
        _lo, hi = number_range(self.sigma, f"{where}.sigma")
        if hi > 4.0:
            raise InvalidParameterError(f"{where}.sigma must be ≤ 4 HR pixels, got {self.sigma!r}")


@dataclass
class DegradationConfig:
    """How LR inputs are made from HR patches (in normalised model space).

    ``kind: default`` — :func:`medsr.degradations.default_degradation` for each patch's
    modality, or with ``params.bicubic_fraction: p`` plain antialiased bicubic for a fraction
    ``p`` of the patches and the modality's pipeline for the rest (one blind model for both;
    ``p`` may be a mapping by modality group with a ``default``, e.g. ``{CT: 1.0, default: 0.5}``); ``kind: compose`` — ``steps`` (each a ``{kind, params}``) applied in order;
    any other registered kind with ``params``. ``scale`` is passed to kinds whose first
    argument is ``scale`` (not to noise models) unless ``params`` sets it. ``hr_noise``
    (top level only): scanner noise added to a fraction of the HR patches before the LR is
    made (:class:`HRNoiseConfig`); ``hr_blur`` (top level only): a softer reconstruction kernel
    on a fraction of the HR patches, before the noise (:class:`HRBlurConfig`).
    """

    kind: str = "default"
    params: dict[str, Any] = field(default_factory=dict)
    steps: list[DegradationConfig] = field(default_factory=list)
    hr_noise: HRNoiseConfig | None = None
    hr_blur: HRBlurConfig | None = None

    def validate(self, where: str) -> None:
        from medsr.degradations import list_degradations

        if self.hr_noise is not None:
            self.hr_noise.validate(f"{where}.hr_noise")
        if self.hr_blur is not None:
            self.hr_blur.validate(f"{where}.hr_blur")
        for i, s in enumerate(self.steps):
            for key in ("hr_noise", "hr_blur"):
                if getattr(s, key) is not None:
                    raise InvalidParameterError(
                        f"{where}.steps[{i}].{key}: {key} belongs to the top-level degradation"
                    )

        self.kind = self.kind.strip().lower()
        known = list_degradations()
        if self.kind not in known:
            raise InvalidParameterError(
                f"{where}.kind: unknown degradation {self.kind!r}; choose one of: {', '.join(known)}"
            )
        if self.kind == "default":
            extra = set(self.params) - {"bicubic_fraction"}
            if extra or self.steps:
                raise InvalidParameterError(
                    f"{where}: kind 'default' takes only params.bicubic_fraction (no steps)"
                )
            frac = self.params.get("bicubic_fraction", 0.0)
            if isinstance(frac, dict):
                from medsr.modality import MODALITY_GROUPS

                allowed = (*MODALITY_GROUPS, "default")
                keys, unknown = canonical_names(frac, allowed)
                if unknown:
                    raise InvalidParameterError(
                        f"{where}.params.bicubic_fraction: unknown modality group "
                        f"{', '.join(map(repr, unknown))} (choose from {', '.join(allowed)})"
                    )
                frac = dict(zip(keys, frac.values(), strict=True))
                self.params["bicubic_fraction"] = frac
                values = list(frac.values())
            else:
                values = [frac]
            for v in values:
                if (
                    isinstance(v, bool)
                    or not isinstance(v, (int, float))
                    or not 0.0 <= float(v) <= 1.0
                ):
                    raise InvalidParameterError(
                        f"{where}.params.bicubic_fraction must be a number in [0, 1] (or a mapping "
                        f"of modality groups to such numbers), got {frac!r}"
                    )
        if self.kind == "compose":
            if not self.steps:
                raise InvalidParameterError(f"{where}: kind 'compose' needs a list of 'steps'")
            if self.params:
                raise InvalidParameterError(f"{where}: kind 'compose' takes 'steps', not 'params'")
            for i, s in enumerate(self.steps):
                s.validate(f"{where}.steps[{i}]")
                if s.kind in ("default", "compose"):
                    raise InvalidParameterError(f"{where}.steps[{i}]: {s.kind!r} cannot be a step")
        elif self.steps:
            raise InvalidParameterError(f"{where}: 'steps' only apply to kind 'compose'")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (model card, checkpoints); ``hr_noise`` and ``hr_blur`` only when set, so
        cards of models trained without them keep their old shape."""

        def strip(d: dict[str, Any]) -> dict[str, Any]:
            for key in ("hr_noise", "hr_blur"):
                if d.get(key) is None:
                    d.pop(key, None)
            d["steps"] = [strip(s) for s in d.get("steps", [])]
            return d

        return strip(dataclasses.asdict(self))
