"""rosbag2 files written and read with ``rosbags`` (no rosbag2 install needed).

A scene bag holds exactly what the camera publishes: ``/pushbroom/scanline`` (Image, height 1),
``/pushbroom/gt_line`` (mono8: 0 clear, 255 cloud, 127 no data) and one ``/pushbroom/scene``
marker (std_msgs/Header: stamp = the scene's first line, frame_id = the scene's name), all stamped
on the Landsat 8 line schedule.  The marker's stamp lets a listener attribute every line to its
scene by stamp alone, whatever order its callbacks run in.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .camera import LANDSAT8_LINE_RATE_HZ, encode_rows, truth_from_mono8, truth_mono8
from .codec import ImageFormatError, check_width, decode_line, encode_line
from .normalise import InputSpec, to_reflectance
from .scenes import BANDS, NO_DATA, ArrayScene, Scene

SCANLINE = "/pushbroom/scanline"
GT_LINE = "/pushbroom/gt_line"
SCENE = "/pushbroom/scene"
FRAME_ID = "pushbroom_optical_frame"
IMAGE = "sensor_msgs/msg/Image"
MARKER = "std_msgs/msg/Header"


class BagError(RuntimeError):
    """A bag that cannot be written or read; the message names it and what is wrong."""


def _typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_JAZZY)


def is_partial(path: Path) -> bool:
    """A staging folder of an interrupted ``convert`` (``.<name>.partial``), or inside one."""
    return any(part.startswith(".") and part.endswith(".partial") for part in Path(path).resolve().parts)


def find_bags(path: Path) -> list[Path]:
    """``path`` itself if it is a bag folder, else the bag folders directly below it.

    Staging folders of an interrupted conversion are never data: asked for one, this is a BagError."""
    path = Path(path)
    if is_partial(path):
        raise BagError(f"{path}: an interrupted conversion (a .partial staging folder), not a bag; "
                       "delete it, or run `scannernet convert` again with --clean-partial")
    if (path / "metadata.yaml").is_file():
        return [path]
    if path.is_dir():
        return sorted(p.parent for p in path.glob("*/metadata.yaml") if not p.parent.name.startswith("."))
    return []


def write_scene_bag(path: Path, scene: Scene, encoding: str = "16UC4", storage: str = "mcap",
                    line_rate_hz: float = LANDSAT8_LINE_RATE_HZ, start_ns: int = 1_700_000_000_000_000_000,
                    progress=None) -> int:
    """Write one scene; refuses to overwrite.  Written to a temporary folder, then renamed."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    path = Path(path)
    if path.exists():
        raise BagError(f"{path}: already exists; refusing to overwrite")
    try:
        check_width(scene.width, f"scene {scene.name}")
    except ValueError as exc:
        raise BagError(f"{path}: {exc}") from None
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}.get(storage)
    if plugin is None:
        raise BagError(f"{path}: storage must be 'mcap' or 'sqlite3', got {storage!r}")
    ts = _typestore()
    Image, Header, Time = (ts.types[t] for t in (IMAGE, MARKER, "builtin_interfaces/msg/Time"))
    period = int(1e9 / line_rate_hz)
    staging = path.with_name(f".{path.name}.partial")  # the bag is complete or absent, never torn
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tmp = staging / path.name

    def image(stamp: int, samples: np.ndarray, enc: str):
        step, data = encode_line(samples, enc)
        header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=FRAME_ID)
        return Image(header=header, height=1, width=samples.shape[-1], encoding=enc, is_bigendian=0,
                     step=step, data=np.frombuffer(data, np.uint8))

    lines = 0
    try:
        with Writer(tmp, version=9 if plugin == StoragePlugin.MCAP else 8, storage_plugin=plugin) as writer:
            scan_conn = writer.add_connection(SCANLINE, IMAGE, typestore=ts)
            gt_conn = writer.add_connection(GT_LINE, IMAGE, typestore=ts) if scene.has_truth else None
            scene_conn = writer.add_connection(SCENE, MARKER, typestore=ts)
            marker = Header(stamp=Time(sec=start_ns // 10**9, nanosec=start_ns % 10**9), frame_id=scene.name)
            writer.write(scene_conn, start_ns, ts.serialize_cdr(marker, MARKER))
            for start in range(0, scene.length, 256):
                rho, mask = scene.rows(start, min(start + 256, scene.length))
                encoded = encode_rows(rho, encoding)
                for r in range(encoded.shape[1]):
                    stamp = start_ns + (start + r) * period
                    writer.write(scan_conn, stamp, ts.serialize_cdr(image(stamp, encoded[:, r], encoding), IMAGE))
                    if gt_conn is not None:
                        writer.write(gt_conn, stamp, ts.serialize_cdr(image(stamp, truth_mono8(mask[r]), "mono8"), IMAGE))
                    lines += 1
                if progress:
                    progress(lines, scene.length)
        tmp.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return lines


@dataclass
class BagMessage:
    topic: str
    timestamp: int
    msg: object


def read_bag(path: Path, topics: tuple[str, ...] = (SCANLINE, GT_LINE, SCENE)) -> Iterator[BagMessage]:
    """Messages in recorded order; a missing, truncated or foreign bag is a BagError."""
    from rosbags.rosbag2 import Reader
    path = Path(path)
    ts = _typestore()
    try:
        with Reader(path) as reader:
            connections = [c for c in reader.connections if c.topic in topics]
            for c in connections:
                expected = MARKER if c.topic == SCENE else IMAGE
                if c.msgtype != expected:
                    raise BagError(f"{path}: topic {c.topic} has type {c.msgtype}, expected {expected}")
            if not any(c.topic == SCANLINE for c in connections):
                found = sorted({c.topic for c in reader.connections})
                raise BagError(f"{path}: no {SCANLINE} topic (topics: {found}); not a scannernet_ros scene bag")
            for conn, timestamp, raw in reader.messages(connections=connections):
                yield BagMessage(conn.topic, timestamp, ts.deserialize_cdr(raw, conn.msgtype))
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags raises its own errors plus sqlite/mcap/yaml ones
        raise BagError(f"{path}: unreadable bag ({type(exc).__name__}: {exc})") from None


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def read_bag_scene(path: Path, spec: InputSpec = InputSpec()) -> ArrayScene:
    """Rebuild the image and mask of a scene bag (for training and offline evaluation)."""
    name, rows, truth = Path(path).name, {}, {}
    for m in read_bag(path):
        if m.topic == SCENE:
            name = m.msg.frame_id
            continue
        try:
            line = decode_line(m.msg)
        except ImageFormatError as err:
            raise BagError(f"{path}: bad line at {m.timestamp} on {m.topic}: {err}") from None
        stamp = stamp_ns(m.msg)
        target = rows if m.topic == SCANLINE else truth
        if stamp in target:  # two lines at one stamp cannot both be row `stamp` of the scene
            raise BagError(f"{path}: two {m.topic} lines share the stamp {stamp} ns")
        if m.topic == SCANLINE:
            bands = BANDS[:5] if "swir1" in line.bands else BANDS[:4] if "nir" in line.bands else BANDS[:3]
            target[stamp] = to_reflectance(line.select(bands), line.kind, spec)
        else:
            target[stamp] = line.samples[0]
    if not rows:
        raise BagError(f"{path}: no scanlines")
    unpaired = set(truth) - set(rows)
    if unpaired:
        raise BagError(f"{path}: {len(unpaired)} {GT_LINE} lines have no scanline at their stamp "
                       f"(first at {min(unpaired)} ns); ground truth must share the scanlines' stamps")
    stamps = sorted(rows)
    planes = [_rgbn(rows[s]) for s in stamps]
    if len({p.shape for p in planes}) > 1:
        raise BagError(f"{path}: scanlines differ in bands or width ({sorted({p.shape for p in planes})}); "
                       f"one scene bag holds one encoding and width")
    rho = np.stack(planes, axis=1)
    mask = None
    if truth:
        mask = np.stack([_mask(truth.get(s), rho.shape[2]) for s in stamps])
    return ArrayScene(name, rho, mask)


def _rgbn(samples: np.ndarray) -> np.ndarray:
    """At least the four bands every scene has (a 3-band line's NIR row repeats red)."""
    return samples if samples.shape[0] >= 4 else np.concatenate([samples[:3], samples[:1]])


def _mask(gt: np.ndarray | None, width: int) -> np.ndarray:
    return np.full(width, NO_DATA, np.uint8) if gt is None else truth_from_mono8(gt)

