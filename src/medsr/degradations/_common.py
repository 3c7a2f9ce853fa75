"""Shared machinery of the degradation models: argument checks, random sampling, 1-D filters.

Sampling-grid convention (the same as :meth:`medsr.image.MedImage.resampled`): a low-resolution
sample ``j`` along an axis reduced by an integer factor ``f`` is centred on high-resolution index
``f·j + (f − 1)/2`` (cell-centred; it covers the HR cells ``f·j … f·j + f − 1``). Every
degradation in this package samples there, so the geometry ``degrade_image`` reports is exact.
An axis whose length is not a multiple of ``f`` is first cropped by dropping its *trailing*
samples (bottom rows, right columns, last slices): voxel 0 stays where it was.

Blur kernels are *cell-integrated*: a profile ``P`` (Gaussian or rectangle, in HR pixels) is
integrated over each HR pixel cell ``[k − ½, k + ½]``, so a zero-width profile is a pure point
sample (with linear interpolation between the two middle pixels when ``f`` is even) and weights
always sum to one (a constant image stays constant). Borders are handled by symmetric
(half-sample) reflection, like ``scipy.ndimage``'s default ``mode="reflect"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from medsr.errors import InvalidParameterError

GeneratorLike = torch.Generator | int | None

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # ≈ 2.3548


# --------------------------------------------------------------------------- argument checks
#: the largest seed torch's generator takes (its state is 64 bits)
MAX_SEED = 2**64 - 1


def check_seed(seed: Any, what: str = "a noise seed") -> int:
    """``seed`` as a noise seed: a whole number from 0 to :data:`MAX_SEED`, or a clear error
    (``what`` names the seed in it, e.g. ``"a sampling seed"``).

    Negative seeds are refused: torch's ``manual_seed`` takes ``−s`` as ``2**64 − 1 − s``, so one
    image would be recorded under two seeds; beyond 64 bits torch has no state for it (an
    ``OverflowError`` deep in torch before)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidParameterError(f"{what} must be a whole number, got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise InvalidParameterError(
            f"{what} must be a whole number from 0 to {MAX_SEED} (2**64 − 1), got {int(seed)}"
        )
    return int(seed)


def offset_seed(seed: int, offset: int) -> int:
    """The seed ``seed + offset`` of a derived draw (a slice, a pass, a sample), wrapped into
    0…:data:`MAX_SEED` so that every seed :func:`check_seed` accepts keeps working."""
    return (int(seed) + int(offset)) % (MAX_SEED + 1)


def as_generator(generator: GeneratorLike) -> torch.Generator | None:
    """A ``torch.Generator`` from a generator, an integer seed (:func:`check_seed`), or ``None``
    (global RNG)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        check_seed(generator)
        g = torch.Generator()
        g.manual_seed(int(generator))
        return g
    raise InvalidParameterError(
        f"generator must be a torch.Generator, an integer seed or None, got {generator!r}"
    )


def check_scale(scale: Any, name: str = "scale") -> int:
    """``scale`` as a positive integer, or a clear error."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer, float)):
        raise InvalidParameterError(f"{name} must be a positive integer, got {scale!r}")
    if float(scale) != int(scale) or int(scale) < 1:
        raise InvalidParameterError(f"{name} must be a positive integer, got {scale!r}")
    return int(scale)


def check_nonnegative(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise InvalidParameterError(f"{name} must be a finite number ≥ 0, got {value!r}")
    return v


def check_tensor(x: Any, ndims: Sequence[int] = (4,), name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a floating tensor with one of the allowed numbers of dimensions."""
    if not isinstance(x, torch.Tensor):
        raise InvalidParameterError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in tuple(ndims):
        layouts = {4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}
        expected = " or ".join(layouts.get(n, f"{n}-D") for n in ndims)
        raise InvalidParameterError(f"{name} must have shape {expected}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    return x


def normalize_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise InvalidParameterError(f"axis {axis} is out of range for a {ndim}-D tensor")
    return axis % ndim


def crop_to_multiple(x: torch.Tensor, factor: int, axes: Sequence[int]) -> torch.Tensor:
    """Drop trailing samples along ``axes`` so each length is a multiple of ``factor``."""
    for axis in axes:
        ax = normalize_axis(axis, x.ndim)
        n = x.shape[ax]
        if n < factor:
            raise InvalidParameterError(
                f"the image is {n} pixels along an axis, too small to reduce by a factor {factor}"
            )
        x = x.narrow(ax, 0, (n // factor) * factor)
    return x


# --------------------------------------------------------------------------- random numbers
def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (drawn on the generator's device, then moved)."""
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=dtype).to(x.device)


def poisson(rate: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Poisson draws with mean ``rate`` (≥ 0), on the generator's device, returned on ``rate``'s."""
    device = generator.device if generator is not None else rate.device
    out = torch.poisson(rate.to(device=device, dtype=torch.float32), generator=generator)
    return out.to(device=rate.device, dtype=rate.dtype)


def _uniform(generator: torch.Generator | None) -> float:
    device = generator.device if generator is not None else "cpu"
    return float(torch.rand((), generator=generator, device=device, dtype=torch.float64))


def sample_value(spec: Any, generator: torch.Generator | None, *, log: bool = False) -> Any:
    """Draw one parameter value from a specification.

    * a scalar (or ``None``, or a string): fixed, returned as is;
    * a 2-tuple ``(low, high)``: uniform on ``[low, high]`` (log-uniform when ``log``; uniform
      integers in ``low … high`` inclusive when both ends are ints);
    * a list: one element chosen uniformly.
    """
    if isinstance(spec, list):
        if not spec:
            raise InvalidParameterError("a list of choices must not be empty")
        idx = min(int(_uniform(generator) * len(spec)), len(spec) - 1)
        return spec[idx]
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise InvalidParameterError(f"a range must be (low, high), got {spec!r}")
        lo, hi = spec
        if lo > hi:
            raise InvalidParameterError(f"a range must have low ≤ high, got {spec!r}")
        u = _uniform(generator)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in spec):
            return int(lo) + min(int(u * (int(hi) - int(lo) + 1)), int(hi) - int(lo))
        if log:
            if lo <= 0:
                raise InvalidParameterError(f"a log-uniform range must be positive, got {spec!r}")
            return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
        return float(lo + u * (hi - lo))
    return spec


def is_random_spec(spec: Any) -> bool:
    return isinstance(spec, (tuple, list))


class RandomDegradation:
    """Base of the ``Random…`` wrappers: sample parameters, then call the deterministic model.

    Every keyword parameter of the wrapper has the name of the deterministic function's
    parameter it drives and accepts a fixed value, a ``(low, high)`` range or a list of choices
    (see :func:`sample_value`). With ``per_sample=True`` (default) each item of the batch gets
    its own parameters; ``last_params`` holds the values used in the latest call (a list, one
    dict per item, or a single dict for a batch-wide draw).

    Calling ``wrapper(x, generator)`` is deterministic given the generator (or integer seed).
    """

    #: the deterministic model (``function(x, scale, **params)``).
    function: ClassVar[Callable[..., torch.Tensor]]
    #: parameters sampled log-uniformly from ranges (doses, photon counts).
    log_params: ClassVar[frozenset[str]] = frozenset()
    #: whether ``function`` takes a ``generator`` (it draws noise).
    uses_generator: ClassVar[bool] = False
    #: whether the model works on volumes (N, C, D, H, W) rather than slices (N, C, H, W).
    volumetric: ClassVar[bool] = False
    #: name of the parameter that ``degrade_image`` fills from the in-plane pixel size (mm).
    pixel_size_param: ClassVar[str | None] = None

    def __init__(self, scale: int = 1, *, per_sample: bool = True, **params: Any) -> None:
        self.scale = check_scale(scale)
        self.params = dict(params)
        self.per_sample = bool(per_sample)
        self.last_params: Any = None
        # validate fixed values early by sampling once with a throwaway generator
        self.sample(torch.Generator().manual_seed(0))

    def sample(self, generator: GeneratorLike = None) -> dict[str, Any]:
        """One draw of every parameter."""
        g = as_generator(generator)
        return {
            k: sample_value(v, g, log=k in self.log_params) for k, v in sorted(self.params.items())
        }

    def _apply(self, x: torch.Tensor, params: dict[str, Any], g: torch.Generator | None):
        if self.uses_generator:
            return type(self).function(x, self.scale, generator=g, **params)
        return type(self).function(x, self.scale, **params)

    def __call__(self, x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        g = as_generator(generator)
        random = any(is_random_spec(v) for v in self.params.values())
        if not (self.per_sample and random) or x.shape[0] == 1:
            params = self.sample(g)
            self.last_params = params
            return self._apply(x, params, g)
        outs, used = [], []
        for i in range(x.shape[0]):
            params = self.sample(g)
            used.append(params)
            outs.append(self._apply(x[i : i + 1], params, g))
        self.last_params = used
        return torch.cat(outs, dim=0)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{type(self).__name__}(scale={self.scale}{', ' if args else ''}{args})"


# --------------------------------------------------------------------------- 1-D filtering
def _reflect_index(idx: np.ndarray, n: int, *, edge: bool = True) -> np.ndarray:
    """Reflection of indices into ``0 … n − 1``, any distance: symmetric (half-sample, the edge
    sample repeated: numpy's ``symmetric``) by default, about the edge samples with ``edge=False``
    (numpy's ``reflect``; a single sample is repeated)."""
    if not edge:
        if n == 1:
            return np.zeros_like(idx)
        period = 2 * (n - 1)
        m = np.mod(idx, period)
        return np.where(m >= n, period - m, m)
    period = 2 * n
    m = np.mod(idx, period)
    return np.where(m >= n, period - 1 - m, m)


def cell_weights(profile: str, width: float, centre: float) -> tuple[np.ndarray, np.ndarray]:
    """The profile (``"gaussian"``: ``width`` = σ; ``"box"``: full width; 0: a point sample,
    half to each cell on an edge) integrated over unit cells ``d − ½ … d + ½`` around ``centre``:
    ``(d, weights)`` over every cell the profile reaches, not normalised."""
    if profile == "gaussian":
        radius = 4.0 * width + 0.5
    elif profile == "box":
        radius = width / 2.0 + 0.5
    else:
        raise InvalidParameterError(f"unknown slice/blur profile {profile!r} (gaussian or box)")
    d = np.arange(math.floor(centre - radius), math.ceil(centre + radius) + 1)
    lo, hi = d - 0.5 - centre, d + 0.5 - centre  # cell edges relative to the profile centre
    if width <= 0:  # the CDF of a point mass, taking ½ on a cell edge
        w = np.where((lo < 0) & (hi > 0), 1.0, np.where((lo == 0) | (hi == 0), 0.5, 0.0))
    elif profile == "gaussian":
        # math.erf on the few dozen cell edges: scipy.special's import alone took 0.25 s of
        # a single-image `medsr upscale` (this runs in its consistency check)
        erf = np.vectorize(math.erf, otypes=[np.float64])
        s = width * math.sqrt(2.0)
        w = 0.5 * (erf(hi / s) - erf(lo / s))
    else:
        w = np.clip(np.minimum(hi, width / 2.0) - np.maximum(lo, -width / 2.0), 0.0, None)
    return d, np.asarray(w, dtype=np.float64)


def profile_weights(profile: str, width: float, factor: int) -> tuple[np.ndarray, int]:
    """Cell-integrated profile weights for one LR sample at HR offset ``c = (factor − 1)/2``.

    Args:
        profile: ``"gaussian"`` (``width`` is the standard deviation σ in HR pixels) or ``"box"``
            (``width`` is the full width of the rectangle in HR pixels).
        width: see ``profile``; 0 means a point sample.
        factor: the decimation factor (1 for a plain blur).

    Returns:
        ``(weights, first_offset)``: ``out[j] = Σ_m weights[m] · x[f·j + first_offset + m]``.
    """
    d, w = cell_weights(profile, float(width), (factor - 1) / 2.0)
    nz = np.nonzero(w > 1e-12)[0]
    w = w[nz[0] : nz[-1] + 1]
    return w / w.sum(), int(d[nz[0]])


def _symmetric_window(x: torch.Tensor, ax: int, start: int, stop: int) -> torch.Tensor:
    """Samples ``start … stop − 1`` of ``x`` along ``ax``, extended beyond its ends by symmetric
    (half-sample) reflection. Within one reflection at each end this is slices and flips (a view
    when no sample lies outside), farther a gather: the same values, several times faster than a
    gather on large planes."""
    n = x.shape[ax]
    if start < -n or stop > 2 * n:
        idx = torch.as_tensor(_reflect_index(np.arange(start, stop), n), device=x.device)
        return x.index_select(ax, idx)
    parts = []
    if start < 0:  # sample i < 0 is sample −i − 1
        end = min(stop, 0)
        parts.append(x.narrow(ax, -end, end - start).flip(ax))
    lo, hi = max(start, 0), min(stop, n)
    if hi > lo:
        parts.append(x.narrow(ax, lo, hi - lo))
    if stop > n:  # sample i ≥ n is sample 2n − 1 − i
        first = max(start, n)
        parts.append(x.narrow(ax, 2 * n - stop, stop - first).flip(ax))
    return parts[0] if len(parts) == 1 else torch.cat(parts, ax)


def filter_axis(
    x: torch.Tensor,
    axis: int,
    factor: int = 1,
    *,
    profile: str = "gaussian",
    width: float = 0.0,
) -> torch.Tensor:
    """Blur ``x`` along ``axis`` with a cell-integrated profile and keep every ``factor``-th
    (cell-centred) sample. ``x``'s length along ``axis`` must be a multiple of ``factor``.
    """
    ax = normalize_axis(axis, x.ndim)
    n = x.shape[ax]
    n_out = n // factor
    weights, first = profile_weights(profile, float(width), factor)
    if factor == 1 and len(weights) == 1:
        return x
    k = len(weights)
    span = (n_out - 1) * factor + 1
    padded = _symmetric_window(x, ax, first, first + span - 1 + k)
    # a weighted sum of k shifted views along the axis itself (no transposes): the same sums, in
    # the same order, as a 1-channel conv1d, several times faster on large planes
    w = torch.as_tensor(weights, dtype=x.dtype).tolist()
    taps = [slice(None)] * x.ndim
    taps[ax] = slice(0, span, factor)
    out = padded[tuple(taps)] * w[0]
    for m in range(1, k):
        taps[ax] = slice(m, m + span, factor)
        out = (
            out.add_(padded[tuple(taps)], alpha=w[m])
            if not out.requires_grad
            else out + padded[tuple(taps)] * w[m]
        )
    return out


def gaussian_blur(x: torch.Tensor, sigma: float, axes: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Separable Gaussian blur (σ in pixels, cell-integrated, symmetric borders) along ``axes``."""
    sigma = check_nonnegative(sigma, "sigma")
    if sigma == 0:
        return x
    for axis in axes:
        x = filter_axis(x, axis, 1, profile="gaussian", width=sigma)
    return x


def block_mean(x: torch.Tensor, factor: int, axes: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Mean over non-overlapping blocks of ``factor`` samples along ``axes`` (a detector
    element integrating over its aperture). Lengths must be multiples of ``factor``."""
    if factor == 1:
        return x
    for axis in axes:
        ax = normalize_axis(axis, x.ndim)
        n = x.shape[ax]
        xm = x.movedim(ax, -1)
        xm = xm.reshape(*xm.shape[:-1], n // factor, factor).mean(dim=-1)
        x = xm.movedim(-1, ax)
    return x
