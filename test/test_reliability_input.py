"""Property-based: any sensor_msgs/Image field values are processed correctly or rejected with a
typed error; nothing raises anything else, nothing allocates beyond what the message carries."""
from __future__ import annotations

import os

import numpy as np
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scannernet_ros.codec import ENCODINGS, MAX_WIDTH, ImageFormatError, decode_line
from scannernet_ros.learning.models import build_model
from scannernet_ros.streaming import LineSegmenter
from scannernet_ros.weights import ModelInfo


# SCANNERNET_PROPERTY_SCALE=20 runs every property test with twenty times its examples.
SCALE = int(os.environ.get("SCANNERNET_PROPERTY_SCALE", "1"))


class Msg:
    def __init__(self, **fields):
        self.__dict__.update(fields)


encodings = st.one_of(st.sampled_from(sorted(ENCODINGS)), st.text(max_size=12))


@st.composite
def images(draw):
    """Mostly near-valid messages (so valid paths are reached), with every field free to be wrong."""
    encoding = draw(encodings)
    dtype, bands = ENCODINGS.get(encoding, (np.dtype(np.uint8), ("mono",)))
    width = draw(st.one_of(st.integers(0, 40), st.integers(-5, 0), st.sampled_from([MAX_WIDTH, MAX_WIDTH + 1, 2**31])))
    height = draw(st.one_of(st.just(1), st.integers(-2, 4)))
    row = max(width, 0) * len(bands) * dtype.itemsize
    step = draw(st.one_of(st.just(row), st.integers(row - 3, row + 8), st.integers(0, 2**32 - 1)))
    length = max(step * max(height, 0), 0)
    length = draw(st.one_of(st.just(length), st.integers(0, 600)))
    if length > 4096:  # huge claimed sizes: keep the real buffer small, the claim still stands
        length = draw(st.integers(0, 64))
    data = draw(st.binary(min_size=length, max_size=length))
    return Msg(height=height, width=width, encoding=encoding, step=step,
               is_bigendian=draw(st.integers(0, 1)), data=data)


@settings(max_examples=600 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images())
def test_codec_decodes_or_rejects_with_a_typed_error(msg):
    try:
        line = decode_line(msg)
    except ImageFormatError as err:
        assert err.reason in {"encoding", "height", "width", "step", "data_length", "non_finite"}
        return
    assert line.samples.shape == (len(line.bands), msg.width)
    assert line.samples.nbytes <= len(msg.data)
    assert np.isfinite(line.samples.astype(np.float64)).all()


_SEGMENTER = None


def _segmenter() -> LineSegmenter:
    global _SEGMENTER
    if _SEGMENTER is None:
        torch.manual_seed(0)
        _SEGMENTER = LineSegmenter(build_model("scannernet_small"), ModelInfo("scannernet_small", {"hidden": (4, 4), "kernel_size": 7}))
    return _SEGMENTER


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images(), st.integers(0, 2**63 - 1))
def test_segmenter_core_answers_or_counts_every_line(msg, stamp):
    seg = _segmenter()
    before_in, before_out = seg.counters.lines_in, seg.counters.lines_out
    before_rejected = sum(seg.counters.rejected.values())
    try:
        prob = seg.process_image(msg, stamp)
    except ImageFormatError:
        assert sum(seg.counters.rejected.values()) == before_rejected + 1
        assert seg.counters.lines_out == before_out
    else:
        assert prob.shape == (msg.width,) and np.all((prob >= 0) & (prob <= 1))
        assert seg.counters.lines_out == before_out + 1
    assert seg.counters.lines_in == before_in + 1


def _float_line(values: np.ndarray) -> Msg:
    data = np.ascontiguousarray(values.T, "<f4").tobytes()
    return Msg(height=1, width=values.shape[1], encoding="32FC3", step=len(data), is_bigendian=0, data=data)


finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=200 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(finite_floats, min_size=3 * 8, max_size=3 * 8), min_size=1, max_size=6))
@example([[3e38] + [0.3] * 23])                 # one absurd but finite pixel (overflowed the normaliser)
@example([[-3e38] * 24, [1e-45] * 24])
@example([[5.0000005] + [0.3] * 23])            # just above the physical range
def test_absurd_float_values_never_poison_later_lines(rows):
    """Any finite float32 line is either within the reflectance range and segmented, or rejected
    as out_of_range; either way the next valid line gets finite probabilities (the state is never
    poisoned) and every line is counted once."""
    torch.manual_seed(0)
    seg = LineSegmenter(build_model("scannernet_small"), ModelInfo("scannernet_small", {"hidden": (4, 4), "kernel_size": 7}))
    stamp = 0
    for row in rows:
        values = np.asarray(row, np.float32).reshape(3, 8)
        stamp += seg.line_period_ns
        try:
            prob = seg.process_image(_float_line(values), stamp)
        except ImageFormatError as err:
            assert err.reason == "out_of_range"
            assert not ((values >= -0.5) & (values <= 5.0)).all()
        else:
            assert np.isfinite(prob).all()
        stamp += seg.line_period_ns
        prob = seg.process_image(_float_line(np.full((3, 8), 0.3, np.float32)), stamp)
        assert np.isfinite(prob).all() and np.all((prob >= 0) & (prob <= 1))
    assert seg.counters.lines_in == 2 * len(rows)
    assert seg.counters.dropped == 0
