import numpy as np
import pytest
import torch

from scannernet_ros.codec import Line
from scannernet_ros.learning.models import build_model
from scannernet_ros.normalise import InputSpec, Normaliser
from scannernet_ros.streaming import LineSegmenter
from scannernet_ros.weights import ModelInfo
from conftest import needs_cuda

P = 4_444_444


def _segmenter(name="scannernet", **kw):
    torch.manual_seed(0)
    return LineSegmenter(build_model(name), ModelInfo(name), **kw)


def _line(width=32, seed=0):
    return Line(np.random.default_rng(seed).random((3, width), np.float32), ("red", "green", "blue"), "float")


def test_per_line_equals_whole_image_model_output():
    seg = _segmenter()
    torch.manual_seed(0)
    net = build_model("scannernet").eval()        # the same weights _segmenter got
    image = np.random.default_rng(1).random((3, 25, 40), np.float32)
    probs = seg.segment_image(image, "float")
    x = torch.from_numpy(Normaliser(InputSpec())(image.copy(), "float"))[None]
    with torch.no_grad():
        whole = torch.sigmoid(net(x))[0, 0].numpy()
    np.testing.assert_allclose(probs, whole, atol=1e-6)


def test_resets_and_counters():
    seg = _segmenter(reset_gap_lines=5)
    seg.process(_line(), 0)
    seg.process(_line(), P)
    seg.process(_line(), 4 * P)            # 2 lines missing, below the reset threshold
    assert seg.counters.dropped == 2 and not seg.counters.resets
    seg.process(_line(), 20 * P)           # 15 missing: gap reset
    assert seg.counters.dropped == 17 and seg.counters.resets["stamp_gap"] == 1
    seg.process(_line(), 10 * P)           # backwards
    assert seg.counters.resets["stamp_backwards"] == 1
    seg.process(_line(width=48), 11 * P)   # width change
    assert seg.counters.resets["width_change"] == 1
    seg.reset()
    assert seg.counters.resets["request"] == 1
    assert seg.counters.lines_in == seg.counters.lines_out == 6


def test_gap_reset_can_be_disabled():
    seg = _segmenter(reset_gap_lines=0)
    seg.process(_line(), 0)
    seg.process(_line(), 1000 * P)
    assert seg.counters.dropped == 999 and not seg.counters.resets


def test_gap_reset_gives_fresh_state_output():
    seg, fresh = _segmenter(), _segmenter()
    for i in range(10):
        seg.process(_line(seed=i), i * P)
    after_gap = seg.process(_line(seed=99), 100 * P)
    np.testing.assert_array_equal(after_gap, fresh.process(_line(seed=99), 0))


def test_whole_image_models_are_refused():
    with pytest.raises(ValueError, match="whole images only"):
        LineSegmenter(build_model("cfcn"), ModelInfo("cfcn"))


def test_baseline_streams_too():
    seg = _segmenter("baseline1d")
    assert seg.process(_line(), 0).shape == (32,)


def test_memory_does_not_grow_with_lines():
    seg = _segmenter()
    seg.process(_line(), 0)
    size = sum(a.size for a in seg.stepper.state_arrays())
    for i in range(1, 500):
        seg.process(_line(), i * P)
    assert sum(a.size for a in seg.stepper.state_arrays()) == size
    assert len(seg.compute_ms) <= 4096


@pytest.mark.parametrize("name", ["scannernet", "scannernet_small", "baseline1d"])
@pytest.mark.parametrize("width", [1, 5, 384, 2100])
@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "numpy"])
def test_cpu_steppers_agree_with_model_step(name, width, compiled):
    from scannernet_ros.stepper import make_cpu_stepper
    from scannernet_ros.learning.torch_stepper import ModelStepper
    torch.manual_seed(7)
    net = build_model(name).eval()
    tensors = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    fast = make_cpu_stepper(name, tensors, {}, width, 3, compiled=compiled)
    plain = ModelStepper(net, width, torch.device("cpu"))
    with torch.inference_mode():
        for i in range(50):
            x = torch.randn(1, 3, width) * 3  # wide enough to reach the saturated ends of the gates
            np.testing.assert_allclose(fast.logits(x[0].numpy().copy()), plain.step(x)[0].numpy(), atol=1e-5, rtol=1e-5)
        for a, b in zip(fast.state_arrays(), plain.state_tensors()):
            np.testing.assert_allclose(a, b[0].numpy(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("width", [1, 384])
def test_fused_torch_stepper_agrees_with_model_step(width):
    from scannernet_ros.learning.torch_stepper import FusedStepper, ModelStepper
    torch.manual_seed(7)
    net = build_model("scannernet").eval()
    cpu = torch.device("cpu")
    fused, plain = FusedStepper(net, width, cpu), ModelStepper(net, width, cpu)
    with torch.inference_mode():
        for i in range(50):
            x = torch.randn(1, 3, width) * 3
            torch.testing.assert_close(fused.step(x), plain.step(x), atol=1e-6, rtol=1e-5)


def test_threshold_stepper_thresholds_mean_brightness():
    from scannernet_ros.stepper import make_cpu_stepper
    step = make_cpu_stepper("threshold", {}, {"t": 0.3}, 4, 3)
    x = np.array([[0.1, 0.29, 0.31, 0.9]] * 3, np.float32)
    assert (step.probabilities(x) >= 0.5).tolist() == [False, False, True, True]


@pytest.mark.parametrize("stepper", ["auto", "numpy", "torch"])
def test_fast_and_plain_segmenters_give_the_same_masks(stepper):
    image = np.random.default_rng(3).random((3, 60, 50), np.float32)
    fast = _segmenter(stepper=stepper).segment_image(image, "float")
    plain = _segmenter(stepper="plain").segment_image(image, "float")
    np.testing.assert_allclose(fast, plain, atol=1e-6)


def test_unknown_stepper_is_refused():
    with pytest.raises(ValueError, match="stepper must be one of"):
        _segmenter(stepper="turbo")


@needs_cuda
def test_cuda_segmenter_matches_cpu():
    image = np.random.default_rng(4).random((3, 30, 64), np.float32)
    cpu = _segmenter().segment_image(image, "float")
    gpu = _segmenter(device="cuda").segment_image(image, "float")
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


@pytest.mark.parametrize("stepper", ["auto", "numpy", "torch", "plain"])
def test_nonfinite_state_resets_and_nothing_nonfinite_comes_out(stepper):
    seg = _segmenter(stepper=stepper)
    seg.process(_line(), 0)
    if hasattr(seg.stepper, "state_arrays"):
        seg.stepper.state_arrays()[1].reshape(-1)[3] = np.nan   # poison c1 in place, as an overflow would
    else:
        with torch.inference_mode():
            seg.stepper.state_tensors()[1].view(-1)[3] = float("nan")
    prob = seg.process(_line(seed=1), P)
    assert np.isfinite(prob).all()
    assert seg.counters.resets["nonfinite_state"] == 1
    fresh = _segmenter(stepper=stepper)
    np.testing.assert_allclose(prob, fresh.process(_line(seed=1), P), atol=1e-6)  # rerun from zeros


def test_out_of_range_reflectance_is_rejected_and_not_counted_as_dropped():
    from scannernet_ros.codec import ImageFormatError
    seg = _segmenter()
    seg.process(_line(), 0)
    bad = _line(seed=2)
    bad.samples[1, 5] = 3e38
    with pytest.raises(ImageFormatError) as err:
        seg.process(bad, P)
    assert err.value.reason == "out_of_range"
    prob = seg.process(_line(seed=3), 2 * P)
    assert np.isfinite(prob).all()
    assert seg.counters.rejected["out_of_range"] == 1 and seg.counters.dropped == 0
    assert seg.counters.lines_in == 3 and seg.counters.lines_out == 2


def test_a_stamp_jump_is_a_reset_not_billions_of_drops():
    seg = _segmenter()
    t = 1_700_000_000_000_000_000
    seg.process(_line(), t)
    seg.process(_line(), 0)                  # one line stamped 0
    seg.process(_line(), t + 2 * P)
    assert seg.counters.dropped == 0
    assert seg.counters.resets["stamp_backwards"] == 1 and seg.counters.resets["stamp_jump"] == 1
