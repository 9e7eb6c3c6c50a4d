"""A plain multi-band image file (TIFF, PNG, .npy) as a scene, with an optional mask beside it.

uint8 images are read as reflectance * 255, uint16 as Landsat 8 digital numbers, floats as
reflectance.  Three bands are R, G, B; a fourth is NIR (filled with red when absent), except in
PNG and other Pillow formats, where a fourth channel is alpha and is never taken for a band.
Float images must hold reflectance: NaN, Inf or values outside [-0.5, 5] refuse the file, since
no integer encoding could carry them to the segmenter (NaN would become dark ground).  A 16-bit
colour PNG is decoded here at 16 bits, because Pillow reads it at 8.  A mask
``<stem>_mask.<ext>`` or ``<stem>.mask.npy`` next to the image, if present, is the ground truth
(non-zero = cloud).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..normalise import InputSpec, to_reflectance
from . import NO_DATA, ArrayScene, DatasetError, read_tiff


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_bit_depth(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's header; None for other files."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE):
        return None
    return head[24], head[25]


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def read_png16(path: Path) -> np.ndarray:
    """A non-interlaced 16-bit RGB or RGBA PNG at full depth, ``(rows, cols, channels)`` uint16.
    Pillow reads such files at 8 bits; this undoes PNG's row filters itself."""
    import struct
    import zlib
    data = path.read_bytes()
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise DatasetError(f"{path}: PNG without a header")
    width, height, depth, colour, _, _, interlace = header
    channels = {2: 3, 6: 4}.get(colour)
    if depth != 16 or channels is None or interlace:
        raise DatasetError(f"{path}: only non-interlaced 16-bit RGB/RGBA PNGs are read at 16 bits")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise DatasetError(f"{path}: corrupt PNG data ({exc})") from None
    bpp, stride = 2 * channels, 2 * channels * width
    if len(raw) != height * (stride + 1):
        raise DatasetError(f"{path}: PNG data holds {len(raw)} bytes, expected {height * (stride + 1)}")
    out, prev = bytearray(height * stride), bytearray(stride)
    for r in range(height):
        kind, row = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 255
        elif kind == 2:
            row = bytearray((x + y) & 255 for x, y in zip(row, prev))
        elif kind == 3:
            for i in range(stride):
                row[i] = (row[i] + ((row[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
        elif kind == 4:
            for i in range(stride):
                a, c = (row[i - bpp], prev[i - bpp]) if i >= bpp else (0, 0)
                row[i] = (row[i] + _paeth(a, prev[i], c)) & 255
        elif kind != 0:
            raise DatasetError(f"{path}: unknown PNG row filter {kind}")
        out[r * stride:(r + 1) * stride] = row
        prev = row
    return np.frombuffer(bytes(out), ">u2").astype(np.uint16).reshape(height, width, channels)


def _load(path: Path) -> tuple[np.ndarray, bool]:
    """The pixels, and whether a last channel is alpha (Pillow formats) rather than a band."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return read_tiff(path), False
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False), False
        png = _png_bit_depth(path)
        if png is not None and png[0] == 16 and png[1] in (2, 6):   # Pillow would drop the low 8 bits
            return read_png16(path), png[1] == 6
        from PIL import Image
        image = Image.open(path)
        return np.asarray(image), image.mode in ("RGBA", "LA", "PA", "RGBa", "La")
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader raises its own types
        raise DatasetError(f"{path}: unreadable image ({exc})") from None


def _check_reflectance(raw: np.ndarray, path: Path) -> None:
    from ..codec import REFLECTANCE_LIMITS
    lo, hi = REFLECTANCE_LIMITS
    finite = np.isfinite(raw)
    bad = int((~finite).sum())
    outside = int(((raw < lo) | (raw > hi))[finite].sum())
    if bad or outside:
        values = raw[finite]
        span = f"; finite values span {values.min():.6g} to {values.max():.6g}" if values.size else ""
        raise DatasetError(f"{path}: float image holds {bad} NaN/Inf and {outside} values outside reflectance "
                           f"[{lo}, {hi}]{span}")


def _channels_first(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 2:
        raise DatasetError(f"{path}: single-band image; ScannerNet needs at least R, G, B")
    if image.ndim != 3:
        raise DatasetError(f"{path}: expected a 3-D image, got shape {image.shape}")
    if image.shape[0] in (3, 4) and image.shape[2] not in (3, 4):
        return image
    return image.transpose(2, 0, 1)


def read_image_file(path: Path, spec: InputSpec | None = None) -> ArrayScene:
    path = Path(path)
    pixels, alpha = _load(path)
    raw = _channels_first(pixels, path)
    if alpha:
        raw = raw[:-1]
    if raw.shape[0] < 3:
        raise DatasetError(f"{path}: {raw.shape[0]} bands; need R, G, B (and optionally NIR)")
    kind = {"u1": "uint8", "u2": "uint16"}.get(raw.dtype.kind + str(raw.dtype.itemsize), "float")
    if kind == "float":
        _check_reflectance(raw[:4], path)
    rho = to_reflectance(raw[:4], kind, spec or InputSpec())
    if rho.shape[0] == 3:
        rho = np.concatenate([rho, rho[:1]])
    mask = None
    for candidate in (path.with_name(f"{path.stem}_mask{path.suffix}"), path.with_name(f"{path.stem}.mask.npy")):
        if candidate.is_file():
            m = _load(candidate)[0]
            m = m if m.ndim == 2 else m[..., 0]
            if m.shape != rho.shape[1:]:
                raise DatasetError(f"{candidate}: mask shape {m.shape} differs from the image's {rho.shape[1:]}")
            mask = mask_codes(m)
            break
    return ArrayScene(path.stem, np.ascontiguousarray(rho, np.float32), mask)


def mask_codes(m: np.ndarray) -> np.ndarray:
    """A mask file's values as 0 clear, 1 cloud, NO_DATA.

    A mask holding only 0, 1 and 255 marks no data with 255 (the package's own convention); any
    other mask is read as clear (0) against cloud (anything else), as common 0/255 masks are."""
    values = np.unique(m)
    if set(values.tolist()) <= {0, 1, NO_DATA} and 1 in values:
        return m.astype(np.uint8)
    return (m > 0).astype(np.uint8)
