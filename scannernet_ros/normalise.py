"""From whatever a sensor delivers to the one input scale a model was trained on.

Everything is first mapped to top-of-atmosphere reflectance, then standardised with the mean and
standard deviation recorded in the weights.  16-bit inputs are Landsat 8 Level-1 digital numbers
(rho = 2e-5 * DN - 0.1, the same coefficients for every reflective band), 8-bit inputs are taken as
reflectance * 255, float inputs as reflectance already.  So one model serves 38-Cloud style uint16
lines, 8-bit RGB cameras and float reflectance products alike.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

BAND_NAMES = ("red", "green", "blue", "nir", "swir1")


# Sane ranges of the input scaling: reflectance means and spreads, and the sample gains of
# Landsat-like and 8-bit sensors, with wide margins; what lies outside is a broken file.
SANE = {"mean": (-1.0, 10.0), "std": (1e-4, 100.0), "dn_gain": (1e-9, 1.0), "dn_offset": (-10.0, 10.0),
        "u8_gain": (1e-6, 1.0)}


def _check_number(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or not low <= value <= high:
        raise ValueError(f"{name!r} must be a finite number in [{low:g}, {high:g}], got {value!r}")


@dataclass(frozen=True)
class InputSpec:
    """How raw samples become model input; stored in every weights file."""

    bands: tuple[str, ...] = ("red", "green", "blue")
    dn_gain: float = 2.0e-5      # uint16 Landsat 8 L1 digital number -> reflectance
    dn_offset: float = -0.1
    u8_gain: float = 1.0 / 255.0  # 8-bit sample -> reflectance
    mean: tuple[float, ...] = field(default=(0.3, 0.3, 0.3))
    std: tuple[float, ...] = field(default=(0.2, 0.2, 0.2))

    def __post_init__(self) -> None:
        """Every value is checked, because a NaN or a 1e-300 here makes every pixel NaN downstream."""
        if (not isinstance(self.bands, tuple) or not self.bands
                or any(b not in BAND_NAMES for b in self.bands) or len(set(self.bands)) != len(self.bands)):
            raise ValueError(f"'bands' must be distinct names from {BAND_NAMES}, got {self.bands!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or len(values) != len(self.bands):
                raise ValueError(f"{name!r} needs one number per band ({len(self.bands)}), got {values!r}")
            for v in values:
                _check_number(name, v, *SANE[name])
        for name in ("dn_gain", "dn_offset", "u8_gain"):
            _check_number(name, getattr(self, name), *SANE[name])

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        if not isinstance(d, dict):
            raise ValueError(f"'input' must be an object, got {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"'input' has unknown keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def reflectance_affine(sample_kind: str, spec: InputSpec) -> tuple[float, float]:
    """``(gain, offset)`` with reflectance = gain * sample + offset, for ``uint8``, ``uint16`` or ``float``."""
    if sample_kind == "uint16":
        return spec.dn_gain, spec.dn_offset
    if sample_kind == "uint8":
        return spec.u8_gain, 0.0
    if sample_kind == "float":
        return 1.0, 0.0
    raise ValueError(f"unknown sample kind {sample_kind!r}")


def to_reflectance(samples: np.ndarray, sample_kind: str, spec: InputSpec) -> np.ndarray:
    """Map raw samples of kind ``uint8``, ``uint16`` or ``float`` to reflectance (float32)."""
    gain, offset = reflectance_affine(sample_kind, spec)
    x = samples.astype(np.float32, copy=sample_kind == "float")
    if sample_kind != "float":
        x *= gain
        x += offset
    return x


def from_reflectance(reflectance: np.ndarray, sample_kind: str, spec: InputSpec) -> np.ndarray:
    """Inverse of :func:`to_reflectance`, saturating at the integer range (what a sensor does)."""
    if sample_kind == "uint16":
        dn = np.rint((reflectance - spec.dn_offset) / spec.dn_gain)
        return np.clip(dn, 1, 65535).astype(np.uint16)
    if sample_kind == "uint8":
        return np.clip(np.rint(reflectance / spec.u8_gain), 0, 255).astype(np.uint8)
    return reflectance.astype(np.float32)


class Normaliser:
    """Raw samples to model input in two passes: reflectance scaling and standardisation are
    folded into one gain and one offset per band and sample kind, computed once."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        scale = 1.0 / np.asarray(spec.std, np.float64)
        shift = -np.asarray(spec.mean, np.float64) * scale
        self._affine = {}
        for kind in ("uint16", "uint8", "float"):
            gain, offset = reflectance_affine(kind, spec)
            self._affine[kind] = (scale * gain).astype(np.float32), (scale * offset + shift).astype(np.float32)

    def affine(self, sample_kind: str) -> tuple[np.ndarray, np.ndarray]:
        """``(gain, offset)`` per band, float32: model input = gain * sample + offset."""
        if sample_kind not in self._affine:
            raise ValueError(f"unknown sample kind {sample_kind!r}")
        return self._affine[sample_kind]

    def __call__(self, samples: np.ndarray, sample_kind: str, out: np.ndarray | None = None) -> np.ndarray:
        """``(bands, ...)`` raw samples in the spec's band order -> float32 model input, written into
        ``out`` when given (a stepper's own input buffer: no copy on the way in)."""
        gain, offset = self.affine(sample_kind)
        shape = (-1,) + (1,) * (samples.ndim - 1)
        x = np.multiply(samples, gain.reshape(shape), out=out, dtype=np.float32)
        return np.add(x, offset.reshape(shape), out=x)
