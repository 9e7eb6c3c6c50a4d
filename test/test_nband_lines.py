"""Five-band lines (R, G, B, NIR, SWIR1: 16UC5 and 32FC5) through the codec, the camera's encoder,
scene bags, training data and the segmenter, and what each does with a band it does not have."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from conftest import BIOME, CLOUD38, needs_biome, needs_cloud38
from scannernet_ros.bags import read_bag_scene, write_scene_bag
from scannernet_ros.camera import encode_rows, scan
from scannernet_ros.codec import ImageFormatError, decode_line
from scannernet_ros.nodes.ros_common import line_image
from scannernet_ros.learning.datasets import band_index, load_all
from scannernet_ros.learning.models import build_model
from scannernet_ros.normalise import InputSpec
from scannernet_ros.scenes import ArrayScene, DatasetError
from scannernet_ros.streaming import LineSegmenter
from scannernet_ros.weights import ModelInfo

RGBNS = ("red", "green", "blue", "nir", "swir1")


def _scene(bands: int = 5, rows: int = 12, width: int = 40, seed: int = 0) -> ArrayScene:
    rng = np.random.default_rng(seed)
    rho = rng.uniform(0.02, 0.9, (bands, rows, width)).astype(np.float32)
    return ArrayScene("five", rho, (rng.random((rows, width)) > 0.5).astype(np.uint8))


@pytest.mark.parametrize("encoding,dtype", [("16UC5", np.uint16), ("32FC5", np.float32)])
def test_five_band_encodings_round_trip_every_band(encoding, dtype):
    scene = _scene()
    rows = encode_rows(scene.reflectance, encoding)
    msg = line_image(Header(), rows[:, 3], encoding)
    line = decode_line(msg)
    assert line.bands == RGBNS and line.samples.dtype == dtype and line.samples.shape == (5, 40)
    assert np.array_equal(line.samples, rows[:, 3])
    assert np.array_equal(line.select(("swir1", "red")), rows[[4, 0], 3])


def test_a_truncated_five_band_line_is_refused_with_its_reason():
    msg = line_image(Header(), encode_rows(_scene().reflectance, "16UC5")[:, 0], "16UC5")
    short = Image(header=msg.header, height=1, width=msg.width, encoding="16UC5", is_bigendian=0,
                  step=msg.step, data=bytes(msg.data)[:-2])
    with pytest.raises(ImageFormatError) as err:
        decode_line(short)
    assert err.value.reason


def test_the_camera_refuses_a_band_the_scene_lacks_before_the_first_line():
    with pytest.raises(ValueError, match="swir1"):
        scan(_scene(bands=4), "16UC5")
    assert sum(1 for _ in scan(_scene(bands=5), "16UC5")) == 12
    assert sum(1 for _ in scan(_scene(bands=5), "16UC4")) == 12   # dropping a band is a choice, not an error


def test_a_five_band_scene_bag_rebuilds_all_five_bands(tmp_path):
    scene = _scene()
    write_scene_bag(tmp_path / "bag", scene, encoding="16UC5")
    back = read_bag_scene(tmp_path / "bag")
    assert back.bands == RGBNS
    np.testing.assert_allclose(back.reflectance, scene.reflectance, atol=2e-5)   # one DN is 2e-5 reflectance
    assert np.array_equal(back.mask, scene.mask)


def _five_band_segmenter(stepper: str) -> LineSegmenter:
    import torch
    torch.manual_seed(0)
    net = build_model("scannernet", in_channels=5)
    tensors = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    spec = InputSpec(bands=RGBNS, mean=(0.3,) * 5, std=(0.2,) * 5)
    return LineSegmenter(tensors, ModelInfo("scannernet", input=spec), reset_gap_lines=0, stepper=stepper)


def test_the_segmenter_runs_a_five_band_model_on_16uc5_lines_and_refuses_4_band_ones():
    scene = _scene(rows=6, width=70)
    rows = encode_rows(scene.reflectance, "16UC5")
    kernel, numpy_step = _five_band_segmenter("auto"), _five_band_segmenter("numpy")
    period = kernel.line_period_ns
    for r in range(rows.shape[1]):
        msg = line_image(Header(), rows[:, r], "16UC5")
        a = kernel.process_image(msg, (r + 1) * period)
        b = numpy_step.process_image(msg, (r + 1) * period)
        assert a.shape == (70,)
        np.testing.assert_allclose(a, b, atol=1e-5)
    four = line_image(Header(), encode_rows(scene.reflectance, "16UC4")[:, 0], "16UC4")
    with pytest.raises(ImageFormatError) as err:
        kernel.process_image(four, 7 * period)
    assert err.value.reason == "band_count"


def test_an_rgb_model_takes_the_rgb_bands_of_a_16uc5_line():
    from scannernet_ros.weights import resolve_model_path
    seg = LineSegmenter.from_file(str(resolve_model_path("scannernet")), reset_gap_lines=0)
    scene = _scene(rows=1, width=50)
    five = seg.process_image(line_image(Header(), encode_rows(scene.reflectance, "16UC5")[:, 0], "16UC5"),
                             seg.line_period_ns)
    seg.reset("test")
    three = seg.process_image(line_image(Header(), encode_rows(scene.reflectance, "rgb16")[:, 0], "rgb16"),
                              seg.line_period_ns)
    assert np.array_equal(five, three)


@needs_biome
def test_l8_biome_patches_carry_swir1_and_38cloud_asking_for_it_is_an_error_naming_it():
    biome = load_all([str(BIOME)])
    assert all(s.reflectance.shape[0] == 5 for s in biome)
    assert band_index(biome, RGBNS) == [0, 1, 2, 3, 4]
    # snow is dark in SWIR1 and cloud bright: the band carries what R, G, B cannot
    snow = [s for s in biome if s.name.startswith("SnowIce") and (s.mask == 0).sum() > 1000]
    assert len(snow) >= 2
    for s in snow:
        clear = s.mask == 0
        assert np.median(s.reflectance[4][clear]) < 0.5 * np.median(s.reflectance[0][clear]), s.name


@needs_cloud38
def test_38cloud_has_no_swir1_and_training_on_it_says_so():
    samples = load_all([str(CLOUD38 / "38-Cloud_training")])
    with pytest.raises(DatasetError, match="swir1"):
        band_index(samples, RGBNS)
