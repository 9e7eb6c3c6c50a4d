"""One-row ``sensor_msgs/Image`` <-> numpy, without ROS.

Functions take any object with the Image fields (``height``, ``width``, ``encoding``,
``is_bigendian``, ``step``, ``data``), so the same code serves rclpy messages, rosbags messages
and tests.  Every way a line can be malformed raises :class:`ImageFormatError` with a short
``reason`` used as the rejection counter's key.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RGB = ("red", "green", "blue")
BGR = ("blue", "green", "red")
RGBN = ("red", "green", "blue", "nir")
RGBNS = RGBN + ("swir1",)

# encoding -> (sample dtype, band names in memory order)
ENCODINGS: dict[str, tuple[np.dtype, tuple[str, ...]]] = {
    "rgb8": (np.dtype(np.uint8), RGB),
    "bgr8": (np.dtype(np.uint8), BGR),
    "rgba8": (np.dtype(np.uint8), RGB + ("alpha",)),
    "bgra8": (np.dtype(np.uint8), BGR + ("alpha",)),
    "mono8": (np.dtype(np.uint8), ("mono",)),
    "mono16": (np.dtype(np.uint16), ("mono",)),
    "rgb16": (np.dtype(np.uint16), RGB),
    "bgr16": (np.dtype(np.uint16), BGR),
    "16UC3": (np.dtype(np.uint16), RGB),
    "16UC4": (np.dtype(np.uint16), RGBN),
    "16UC5": (np.dtype(np.uint16), RGBNS),
    "32FC1": (np.dtype(np.float32), ("mono",)),
    "32FC3": (np.dtype(np.float32), RGB),
    "32FC4": (np.dtype(np.float32), RGBN),
    "32FC5": (np.dtype(np.float32), RGBNS),
}
INPUT_ENCODINGS = tuple(e for e in ENCODINGS if e != "32FC1")
MAX_WIDTH = 1 << 16  # ten times a Landsat 8 swath; anything wider is rejected before allocating
# Float samples are top-of-atmosphere reflectance: a little below 0 (calibration noise) up to well
# above 1 (specular glint).  Anything outside cannot be a measurement, and would overflow the
# normaliser and poison the recurrent state, so such a line is rejected.
REFLECTANCE_LIMITS = (-0.5, 5.0)


class ImageFormatError(ValueError):
    """A line that cannot be used; ``reason`` is a stable key for counters and diagnostics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Line:
    """One decoded image row: ``samples`` is ``(bands, width)`` in the named band order."""

    samples: np.ndarray
    bands: tuple[str, ...]
    kind: str  # "uint8", "uint16" or "float": how to read the samples as reflectance

    @property
    def width(self) -> int:
        return self.samples.shape[1]

    def select(self, wanted: tuple[str, ...]) -> np.ndarray:
        """The ``wanted`` bands in that order; a missing band is a ``band_count`` rejection."""
        if self.bands[:len(wanted)] == wanted:
            return self.samples[:len(wanted)]
        try:
            index = [self.bands.index(b) for b in wanted]
        except ValueError:
            raise ImageFormatError(
                "band_count", f"model needs bands {wanted}, line has {self.bands}") from None
        return self.samples[index]


def check_width(width: int, what: str = "line") -> None:
    """The one width limit of the package (camera, convert, segmenter, evaluate): 1..MAX_WIDTH."""
    if not 0 < width <= MAX_WIDTH:
        raise ValueError(f"{what} is {width} px wide; widths must be 1 to {MAX_WIDTH} px")


def check_values(samples: np.ndarray, kind: str) -> None:
    """Reject float samples outside :data:`REFLECTANCE_LIMITS` (NaN and Inf included); integer
    samples are in range by construction (any uint8 or uint16 maps to a physical reflectance)."""
    if kind != "float" or samples.size == 0:
        return
    low, high = samples.min(), samples.max()
    lo, hi = float(low), float(high)
    if not (REFLECTANCE_LIMITS[0] <= lo and hi <= REFLECTANCE_LIMITS[1]):  # NaN fails both
        shortest = [np.format_float_positional(v, trim="-") if np.isfinite(v) else str(v) for v in (low, high)]
        raise ImageFormatError(   # the shortest digits that tell the sample apart (5.0000005, not 5)
            "out_of_range", f"float samples must be reflectance in [{REFLECTANCE_LIMITS[0]}, "
                            f"{REFLECTANCE_LIMITS[1]}], line holds {shortest[0]} to {shortest[1]}")


def sample_kind(dtype: np.dtype) -> str:
    return {"u1": "uint8", "u2": "uint16", "f4": "float"}[dtype.kind + str(dtype.itemsize)]


def decode_line(msg) -> Line:
    """Validate and decode a one-row Image; honours ``step`` padding and ``is_bigendian``."""
    encoding = str(msg.encoding)
    if encoding not in ENCODINGS:
        raise ImageFormatError("encoding", f"unsupported encoding {encoding!r}")
    if msg.height != 1:
        raise ImageFormatError("height", f"a scanline has height 1, got {msg.height}")
    width = int(msg.width)
    if not 0 < width <= MAX_WIDTH:
        raise ImageFormatError("width", f"width must be in 1..{MAX_WIDTH}, got {width}")
    dtype, bands = ENCODINGS[encoding]
    row_bytes = width * len(bands) * dtype.itemsize
    if msg.step < row_bytes:
        raise ImageFormatError("step", f"step {msg.step} < {row_bytes} bytes for {width} px {encoding}")
    data = msg.data
    if len(data) != msg.step * msg.height:
        raise ImageFormatError(
            "data_length", f"data has {len(data)} bytes, step * height = {msg.step * msg.height}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        data = memoryview(data).cast("B") if hasattr(data, "itemsize") else bytes(data)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = np.frombuffer(data, dtype=dtype, count=width * len(bands))
    samples = pixels.reshape(width, len(bands)).T
    if dtype.kind == "f" and not np.isfinite(samples).all():
        raise ImageFormatError("non_finite", "line holds NaN or Inf samples")
    return Line(samples, bands, sample_kind(dtype))


def encode_line(samples: np.ndarray, encoding: str, bigendian: bool = False) -> tuple[int, bytes]:
    """``(bands, width)`` samples in the encoding's band order -> (step, data) of a one-row Image."""
    dtype, bands = ENCODINGS[encoding]
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[None]
    if samples.shape[0] != len(bands):
        raise ValueError(f"{encoding} needs {len(bands)} bands, got {samples.shape[0]}")
    if bigendian and dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">")
    data = np.ascontiguousarray(samples.T, dtype=dtype).tobytes()
    return len(data), data


def bands_of(encoding: str) -> tuple[str, ...]:
    return ENCODINGS[encoding][1]


def kind_of(encoding: str) -> str:
    return sample_kind(ENCODINGS[encoding][0])
