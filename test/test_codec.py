import numpy as np
import pytest

from scannernet_ros.codec import ENCODINGS, ImageFormatError, decode_line, encode_line
from scannernet_ros.normalise import InputSpec, Normaliser, from_reflectance, to_reflectance


class Msg:
    def __init__(self, samples=None, encoding="rgb8", bigendian=False, pad=0, **fields):
        self.height, self.encoding, self.is_bigendian = 1, encoding, int(bigendian)
        if samples is not None:
            self.width = samples.shape[1]
            step, data = encode_line(samples, encoding, bigendian)
            self.step = step + pad
            self.data = data + bytes(pad)
        for k, v in fields.items():
            setattr(self, k, v)


def _samples(encoding, width=17, seed=0):
    dtype, bands = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        return rng.random((len(bands), width), np.float32)
    return rng.integers(0, np.iinfo(dtype).max, (len(bands), width), endpoint=True).astype(dtype)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 5])
def test_round_trip_every_encoding(encoding, bigendian, pad):
    samples = _samples(encoding)
    line = decode_line(Msg(samples, encoding, bigendian, pad))
    np.testing.assert_array_equal(line.samples, samples)
    assert line.bands == ENCODINGS[encoding][1]


def test_bgr_is_reordered_by_band_name():
    rgb = _samples("rgb8")
    line = decode_line(Msg(rgb[::-1].copy(), "bgr8"))
    np.testing.assert_array_equal(line.select(("red", "green", "blue")), rgb)


def test_big_endian_bytes_are_read_as_such():
    msg = Msg(np.array([[1, 2], [3, 4], [5, 6]], np.uint16), "rgb16", bigendian=True)
    assert bytes(msg.data)[:2] == b"\x00\x01"
    np.testing.assert_array_equal(decode_line(msg).samples[:, 0], [1, 3, 5])


def test_rclpy_style_array_data_is_accepted():
    import array
    msg = Msg(_samples("16UC4"), "16UC4")
    msg.data = array.array("B", msg.data)
    assert decode_line(msg).samples.shape == (4, 17)


@pytest.mark.parametrize("change,reason", [
    (dict(height=2), "height"),
    (dict(height=0), "height"),
    (dict(encoding="yuv422"), "encoding"),
    (dict(width=0), "width"),
    (dict(width=1 << 20), "width"),
    (dict(step=10), "step"),
    (dict(data=b"\x00" * 5), "data_length"),
])
def test_malformed_lines_raise_typed_errors(change, reason):
    msg = Msg(_samples("rgb8"), "rgb8")
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(ImageFormatError) as err:
        decode_line(msg)
    assert err.value.reason == reason


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_rejected(bad):
    samples = _samples("32FC4")
    samples[2, 3] = bad
    with pytest.raises(ImageFormatError) as err:
        decode_line(Msg(samples, "32FC4"))
    assert err.value.reason == "non_finite"


def test_missing_band_is_a_band_count_error():
    line = decode_line(Msg(_samples("mono16"), "mono16"))
    with pytest.raises(ImageFormatError) as err:
        line.select(("red", "green", "blue"))
    assert err.value.reason == "band_count"


def test_reflectance_scales_agree_across_bit_depths():
    spec = InputSpec()
    rho = np.array([0.05, 0.3, 0.8], np.float32)
    for kind, tolerance in (("uint16", 2e-5), ("uint8", 1 / 255), ("float", 0)):
        back = to_reflectance(from_reflectance(rho, kind, spec), kind, spec)
        np.testing.assert_allclose(back, rho, atol=tolerance)
    # 38-Cloud digital numbers map to the documented reflectance range
    np.testing.assert_allclose(to_reflectance(np.array([6442, 59019], np.uint16), "uint16", spec),
                               [0.02884, 1.08038], atol=1e-5)


def test_normaliser_standardises_with_the_weights_statistics():
    spec = InputSpec(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.1))
    out = Normaliser(spec)(np.array([[0.6], [0.45], [0.4]], np.float32), "float")
    np.testing.assert_allclose(out[:, 0], [1.0, 1.0, 1.0], rtol=1e-6)
