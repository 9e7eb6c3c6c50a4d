"""Inputs that must be refused with a reason, not answered wrongly: weights beyond the on-board
budget or with absurd magnitudes, scene sources that would be misread, lines beyond the width limit."""
from __future__ import annotations

import os

import numpy as np
import pytest

from scannernet_ros.codec import MAX_WIDTH, ImageFormatError, Line, check_values
from scannernet_ros.weights import WeightsError, read_weights


def _save(path, config: dict, scale: float = 0.1, set_head: float | None = None):
    import torch

    from scannernet_ros.learning.models import build_model
    from scannernet_ros.weights import ModelInfo, save_model
    torch.manual_seed(0)
    net = build_model("scannernet", **config)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
        if set_head is not None:
            net.head.weight.fill_(set_head)
    save_model(path, net, ModelInfo("scannernet", config))
    return path


def test_weights_beyond_the_on_board_budget_are_refused_at_load(tmp_path):
    path = _save(tmp_path / "huge.safetensors", {"hidden": (96, 96), "kernel_size": 21})
    with pytest.raises(WeightsError, match="on-board budget"):
        read_weights(path)


def test_finite_but_absurd_weights_are_refused_at_load(tmp_path):
    path = _save(tmp_path / "absurd.safetensors", {"hidden": (4, 8), "kernel_size": 9}, set_head=3e38)
    with pytest.raises(WeightsError, match="no trained model"):
        read_weights(path)


def test_one_width_limit_everywhere_the_line_segmenter_included(random_weights):
    from scannernet_ros.streaming import LineSegmenter
    seg = LineSegmenter.from_file(str(random_weights))
    wide = Line(np.full((4, MAX_WIDTH + 1), 20000, np.uint16), ("red", "green", "blue", "nir"), "uint16")
    with pytest.raises(ImageFormatError, match="widths must be 1 to"):
        seg.process(wide, 0)
    assert seg.counters.rejected["width"] == 1 and seg.counters.lines_out == 0


def test_the_range_error_shows_enough_digits_to_see_why():
    with pytest.raises(ImageFormatError, match="5.0000005") as err:
        check_values(np.array([[0.2, 5.0000005]], np.float32), "float")
    assert "5 to 5" not in str(err.value)


def test_a_file_size_limit_at_save_is_one_line_exit_2(tmp_path, capsys):
    """RLIMIT_FSIZE, as on a full or quota-limited disk: the CLI says so in one line."""
    import resource
    import subprocess
    import sys
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
            "from scannernet_ros.tools.cli import main; "
            f"sys.exit(main(['train', '--data', 'synthetic:2:32', '--batch-size', '2', '--crop', '16', '--strip', '8', "
            f"'--steps-per-epoch', '1', '--max-epochs', '1', '--val-fraction', '0', '--device', 'cpu', "
            f"'--out', {str(tmp_path / 'run')!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "error:" in run.stderr
    assert resource.getrlimit(resource.RLIMIT_FSIZE)   # this process is untouched


# -- scene sources ---------------------------------------------------------------------------


def test_an_rgba_png_is_read_as_rgb_the_alpha_never_a_band(tmp_path):
    from PIL import Image

    from scannernet_ros.scenes import open_scene
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., :3] = 100
    rgba[..., 3] = 255                     # opaque: as NIR it would read as bright vegetation
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    scene = open_scene(str(tmp_path / "a.png"))
    np.testing.assert_allclose(scene.reflectance[3], scene.reflectance[0])   # NIR filled with red, not alpha


@pytest.mark.parametrize("colour", [2, 6], ids=["rgb", "rgba"])
def test_a_16_bit_colour_png_is_read_at_16_bits(tmp_path, colour):
    """Every PNG row filter, written by hand: the digital numbers come back exactly."""
    import struct
    import zlib

    from scannernet_ros.scenes import open_scene
    from scannernet_ros.scenes.files import _paeth
    channels, width, height = (3 if colour == 2 else 4), 5, 5
    rng = np.random.default_rng(0)
    image = rng.integers(6000, 60000, (height, width, channels)).astype(">u2")
    bpp, rows, prev = 2 * channels, [], bytes(2 * channels * width)
    for r, kind in enumerate((0, 1, 2, 3, 4)):
        raw = image[r].tobytes()
        left = lambda i: raw[i - bpp] if i >= bpp else 0            # noqa: E731
        up_left = lambda i: prev[i - bpp] if i >= bpp else 0        # noqa: E731
        pred = {0: lambda i: 0, 1: left, 2: lambda i: prev[i], 3: lambda i: (left(i) + prev[i]) // 2,
                4: lambda i: _paeth(left(i), prev[i], up_left(i))}[kind]
        rows.append(bytes([kind]) + bytes((raw[i] - pred(i)) & 255 for i in range(len(raw))))
        prev = raw

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    (tmp_path / "deep.png").write_bytes(png)
    scene = open_scene(str(tmp_path / "deep.png"))
    expected = 2e-5 * image[..., :3].astype(np.float64).transpose(2, 0, 1) - 0.1   # Landsat 8 DN -> reflectance
    np.testing.assert_allclose(scene.reflectance[:3], expected, atol=1e-6)
    np.testing.assert_allclose(scene.reflectance[3], scene.reflectance[0])   # no NIR: red, never alpha


@pytest.mark.parametrize("value", [np.nan, 1e30, -np.inf])
def test_a_float_image_with_non_reflectance_values_is_refused(tmp_path, value):
    from scannernet_ros.scenes import DatasetError, open_scene
    image = np.full((6, 5, 3), 0.2, np.float32)
    image[2] = value
    np.save(tmp_path / "f.npy", image)
    with pytest.raises(DatasetError, match="outside reflectance|NaN/Inf"):
        open_scene(str(tmp_path / "f.npy"))


def test_a_fifo_source_is_not_a_regular_file(tmp_path):
    from scannernet_ros.scenes import open_scene
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        open_scene(str(fifo))


def test_the_camera_exits_0_when_a_scene_that_does_not_loop_ends(tmp_path):
    from ros_helpers import start
    np.save(tmp_path / "tiny.npy", np.full((1, 1, 3), 0.2, np.float32))
    proc = start("pushbroom_camera", "tiny_scene", source=str(tmp_path / "tiny.npy"), loop=False)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "scene finished after 1 lines" in out, out
