"""The compiled line step (``scannernet_ros/_linestep.c``): the same numbers as the numpy step it
replaces, at every width (whole and partial pixel blocks), with the padding left untouched, a
poisoned state noticed, bad arguments refused, and numpy taking over where it is not built."""
import os

import numpy as np
import pytest

from scannernet_ros import stepper as steppers
from scannernet_ros.stepper import CpuStepper, KernelStepper, make_cpu_stepper

kernel = steppers._linestep


def _tensors(name="scannernet", seed=3):
    """Random weights of the shipped shapes (see _custom)."""
    return _custom(*{"scannernet": (4, 8, 9), "scannernet_small": (4, 4, 7)}[name], seed=seed)


def _custom(f1, f2, k, seed=6):
    """Random ScannerNet weights of any layer sizes, scaled up so the gates reach their saturated ends."""
    rng = np.random.default_rng(seed)
    return {"cell1.gates.weight": rng.normal(0, 0.3, (4 * f1, 3 + f1, k)).astype(np.float32),
            "cell1.gates.bias": rng.normal(0, 0.5, 4 * f1).astype(np.float32),
            "cell2.gates.weight": rng.normal(0, 0.3, (4 * f2, f1 + f2, k)).astype(np.float32),
            "cell2.gates.bias": rng.normal(0, 0.5, 4 * f2).astype(np.float32),
            "head.weight": rng.normal(0, 1.0, (1, f2, 1)).astype(np.float32),
            "head.bias": rng.normal(0, 1.0, 1).astype(np.float32)}


def test_the_kernel_is_built():
    """``make test`` requires the kernel (SCANNERNET_REQUIRE_KERNEL=1); elsewhere (colcon test against a
    source tree, a machine without a C compiler) its absence is a skip that says so."""
    missing = ("scannernet_ros._linestep is not compiled here (no C compiler at install time, or the tests "
               "import an unbuilt source tree); the numpy step runs instead, about 2x slower")
    if kernel is None and os.environ.get("SCANNERNET_REQUIRE_KERNEL") != "1":
        pytest.skip(missing)
    assert kernel is not None, missing


needs_kernel = pytest.mark.skipif(kernel is None, reason="scannernet_ros._linestep is not built")


@needs_kernel
@pytest.mark.parametrize("name", ["scannernet", "scannernet_small"])
def test_kernel_equals_the_numpy_step(name):
    block = kernel.BLOCK
    tensors = _tensors(name)
    rng = np.random.default_rng(0)
    for width in (1, 2, block - 1, block, block + 1, 3 * block + 5, 384):
        fast, ref = KernelStepper(tensors, width), CpuStepper(tensors, width)
        for line in range(40):
            x = (rng.standard_normal((3, width)) * 3).astype(np.float32)
            np.testing.assert_allclose(fast.logits(x), ref.logits(x), atol=1e-5, rtol=1e-5, err_msg=f"width {width}")
            assert fast.finite()
        for a, b in zip(fast.state_arrays(), ref.state_arrays()):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=f"width {width}")
        np.testing.assert_allclose(fast.probabilities(x), ref.probabilities(x), atol=1e-6)


@needs_kernel
def test_padding_stays_zero():
    width = kernel.BLOCK + 3
    step = KernelStepper(_tensors(), width)
    left = step.dims[3] // 2                                     # k // 2 columns before pixel 0
    rng = np.random.default_rng(1)
    for _ in range(10):
        step.probabilities(rng.standard_normal((3, width)).astype(np.float32))
    outside = np.ones(step.buf.shape[1], bool)
    outside[left:left + width] = False
    assert not step.buf[:, outside].any()
    assert step.h2.any() and step.c2.any()


@needs_kernel
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_raw_samples_are_standardised_in_the_call(dtype):
    """Any sample type and layout (a band-interleaved view, as an rgb8 Image decodes to) gives what
    numpy standardisation followed by the step gives."""
    tensors, width = _tensors(), 70
    rng = np.random.default_rng(4)
    gain, offset = np.array([0.5, 2.0, 1e-3], np.float32), np.array([-1.0, 0.25, 3.0], np.float32)
    fast, ref = KernelStepper(tensors, width), CpuStepper(tensors, width)
    for _ in range(5):
        interleaved = (rng.random((width, 3)) * 200).astype(dtype)
        samples = interleaved.T                                  # (bands, width), strides (itemsize, 3 * itemsize)
        got, finite = fast.step_samples(samples, gain, offset)
        want = ref.probabilities(gain[:, None] * samples.astype(np.float32) + offset[:, None])
        np.testing.assert_allclose(got, want, atol=2e-6)
        assert finite
    with pytest.raises(ValueError, match="samples: expected"):
        fast.step_samples(np.zeros((3, width + 1), np.uint16), gain, offset)
    with pytest.raises(ValueError, match="samples: expected"):
        kernel.step(np.zeros((3, width), ">u2"), gain, offset, fast.buf, fast.c1, fast.c2, fast.scratch, fast.w1,
                    fast.b1, fast.w2, fast.b2, fast.head, np.empty(width, np.float32), *fast.dims, True)


@needs_kernel
@pytest.mark.parametrize("dtype", [">u2", ">f4", np.float64])
def test_lines_the_kernel_cannot_read_as_they_are_are_converted(dtype):
    """A big-endian Image decodes to a big-endian view; such a line is segmented like its native twin."""
    from scannernet_ros.codec import Line
    from scannernet_ros.streaming import LineSegmenter
    from scannernet_ros.weights import ModelInfo
    kind = "uint16" if dtype == ">u2" else "float"
    native = (np.random.default_rng(5).random((3, 40)) * (60000 if kind == "uint16" else 1)).astype(
        np.uint16 if kind == "uint16" else np.float32)
    want = LineSegmenter(_tensors(), ModelInfo("scannernet")).process(Line(native, ("red", "green", "blue"), kind), 0)
    seg = LineSegmenter(_tensors(), ModelInfo("scannernet"))
    got = seg.process(Line(native.astype(dtype), ("red", "green", "blue"), kind), 0)
    assert type(seg.stepper) is KernelStepper
    np.testing.assert_allclose(got, want, atol=1e-7)


@needs_kernel
def test_nonfinite_input_or_state_is_reported():
    step = KernelStepper(_tensors(), 50)
    x = np.zeros((3, 50), np.float32)
    step.logits(x)
    assert step.finite()
    x[1, 17] = np.nan
    step.logits(x)
    assert not step.finite()
    fresh = KernelStepper(_tensors(), 50)
    fresh.c2[5, 3] = np.inf
    fresh.logits(np.zeros((3, 50), np.float32))
    assert not fresh.finite()


@needs_kernel
def test_bad_arguments_are_refused():
    step = KernelStepper(_tensors(), 20)
    args = [np.zeros((3, 20), np.float32), *step.identity, step.buf, step.c1, step.c2, step.scratch, step.w1,
            step.b1, step.w2, step.b2, step.head, np.empty(20, np.float32), *step.dims, True]
    out = 12
    assert kernel.step(*args) is True
    short = list(args)
    short[out] = np.empty(19, np.float32)                     # output one pixel short
    with pytest.raises(ValueError, match="out: expected 20"):
        kernel.step(*short)
    wrong = list(args)
    wrong[17] = 21                                            # width that the buffers were not made for
    with pytest.raises(ValueError, match="expected"):
        kernel.step(*wrong)
    even = list(args)
    even[16] = 8                                              # an even kernel size has no 'same' padding
    with pytest.raises(ValueError, match="bad dimensions"):
        kernel.step(*even)
    strided = list(args)
    strided[4] = np.zeros((4, 40), np.float32)[:, ::2]        # a state array that is not contiguous
    with pytest.raises((ValueError, BufferError, TypeError)):
        kernel.step(*strided)
    frozen = list(args)
    frozen[out] = np.empty(20, np.float32)
    frozen[out].flags.writeable = False
    with pytest.raises((ValueError, BufferError, TypeError)):
        kernel.step(*frozen)


def test_numpy_takes_over_without_the_kernel(monkeypatch):
    tensors = _tensors()
    monkeypatch.setattr(steppers, "_linestep", None)
    assert isinstance(make_cpu_stepper("scannernet", tensors, {}, 30, 3), CpuStepper)


def test_numpy_stepper_can_be_asked_for():
    from scannernet_ros.streaming import LineSegmenter
    from scannernet_ros.weights import ModelInfo
    from scannernet_ros.codec import Line
    tensors = _tensors()
    line = Line(np.random.default_rng(2).random((3, 64), np.float32), ("red", "green", "blue"), "float")
    plain = LineSegmenter(tensors, ModelInfo("scannernet"), stepper="numpy")
    auto = LineSegmenter(tensors, ModelInfo("scannernet"))
    np.testing.assert_allclose(plain.process(line, 0), auto.process(line, 0), atol=1e-6)
    assert type(plain.stepper) is CpuStepper
    assert type(auto.stepper) is (KernelStepper if kernel is not None else CpuStepper)
    with pytest.raises(ValueError, match="CPU only"):
        LineSegmenter(tensors, ModelInfo("scannernet"), device="cuda", stepper="numpy")


@needs_kernel
@pytest.mark.parametrize("f1, f2, k", [(1, 1, 1), (3, 5, 5), (2, 3, 3), (4, 8, 11), (5, 2, 13)])
def test_other_layer_sizes_equal_the_numpy_step(f1, f2, k):
    """A custom config (any hidden counts, any odd kernel: taps not a multiple of three leave the
    last Winograd group part zero) runs in the kernel and gives the numpy step's numbers."""
    tensors = _custom(f1, f2, k)
    rng = np.random.default_rng(k)
    for width in (1, 33, 70):
        fast, ref = make_cpu_stepper("scannernet", tensors, {}, width, 3), CpuStepper(tensors, width)
        assert type(fast) is KernelStepper
        for _ in range(12):
            x = (rng.standard_normal((3, width)) * 3).astype(np.float32)
            np.testing.assert_allclose(fast.logits(x), ref.logits(x), atol=1e-5, rtol=1e-5)
        for a, b in zip(fast.state_arrays(), ref.state_arrays()):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_layer_sizes_the_kernel_does_not_take_run_in_numpy():
    """A layer too wide for the kernel's per-block tile (a custom config) keeps to the numpy step."""
    f1, f2, k = 4, 200, 9                                       # (200 + 4) channels x 3 tap groups > TILE_MAX
    tensors = _custom(f1, f2, k)
    if kernel is not None:
        assert (f1 + f2) * 3 > kernel.TILE_MAX
    step = make_cpu_stepper("scannernet", tensors, {}, 16, 3)
    assert type(step) is CpuStepper
    assert np.isfinite(step.probabilities(np.ones((3, 16), np.float32))).all()


@needs_kernel
@pytest.mark.parametrize("threads", [2, 3, 64])
def test_a_wide_line_split_over_threads_gives_the_same_numbers(threads, monkeypatch):
    """Each pixel is computed the same way whichever thread takes it: the outputs and states are
    identical, not merely close; narrow lines stay on one thread."""
    tensors = _tensors()
    rng = np.random.default_rng(7)
    width = kernel.THREAD_MIN_WIDTH + 37
    one, split = KernelStepper(tensors, width), KernelStepper(tensors, width)
    for _ in range(4):
        x = (rng.standard_normal((3, width)) * 3).astype(np.float32)
        monkeypatch.setattr(steppers, "_kernel_threads", 1)
        want = one.logits(x)
        steppers.set_kernel_threads(threads)
        np.testing.assert_array_equal(split.logits(x), want)
    for a, b in zip(split.state_arrays(), one.state_arrays()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="threads must be"):
        kernel.step(np.zeros((3, width), np.float32), *one.identity, one.buf, one.c1, one.c2, one.scratch, one.w1,
                    one.b1, one.w2, one.b2, one.head, np.empty(width, np.float32), *one.dims, True, 0)


def test_set_threads_reaches_the_compiled_step(monkeypatch):
    """0 (the libraries' default) gives the compiled step every CPU and leaves BLAS alone; counts
    beyond the kernel's limit are clamped."""
    import os
    from scannernet_ros.streaming import set_threads
    monkeypatch.setattr(steppers, "_kernel_threads", 1)
    set_threads(0)
    assert steppers._kernel_threads == min(os.cpu_count() or 1, kernel.MAX_THREADS if kernel is not None else 64)
    steppers.set_kernel_threads(1000)
    assert steppers._kernel_threads == (kernel.MAX_THREADS if kernel is not None else 64)
    steppers.set_kernel_threads(-3)
    assert steppers._kernel_threads == 1
