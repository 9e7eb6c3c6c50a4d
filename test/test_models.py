import pytest
import torch

from scannernet_ros.learning.models import (REGISTRY, ConvLSTM1d, build_model, count_parameters,
                                   resolve_device, state_bytes_per_pixel)
from conftest import needs_cuda

PAPER_COUNTS = {"scannernet": 4521, "scannernet_small": 1717, "baseline1d": 1409, "cfcn": 1471,
                "cunetpp": 8457}  # C-UNet++: the documented layout's count, the paper says 9,129
STREAMING = ["scannernet", "scannernet_small", "baseline1d"]


@pytest.mark.parametrize("name,count", PAPER_COUNTS.items())
def test_parameter_counts(name, count):
    assert count_parameters(build_model(name)) == count


def test_scannernet_layer_counts_match_table_1_breakdown():
    net = build_model("scannernet")
    assert [count_parameters(m) for m in (net.cell1, net.cell2, net.head)] == [1024, 3488, 9]
    small = build_model("scannernet_small")
    assert [count_parameters(m) for m in (small.cell1, small.cell2, small.head)] == [800, 912, 5]


def test_cell_matches_the_paper_equations():
    torch.manual_seed(0)
    cell = ConvLSTM1d(3, 4, 5)
    x, h, c = torch.randn(2, 3, 11), torch.randn(2, 4, 11), torch.randn(2, 4, 11)
    w, b = cell.gates.weight, cell.gates.bias
    conv = lambda k: torch.nn.functional.conv1d(torch.cat([x, h], 1), w[4 * k:4 * k + 4],  # noqa: E731
                                                b[4 * k:4 * k + 4], padding=2)
    i, f, o, g = torch.sigmoid(conv(0)), torch.sigmoid(conv(1)), torch.sigmoid(conv(2)), torch.tanh(conv(3))
    c_ref = f * c + i * g
    h_ref = torch.tanh(c_ref) * o
    h_new, c_new = cell(x, (h, c))
    torch.testing.assert_close(c_new, c_ref)
    torch.testing.assert_close(h_new, h_ref)


@pytest.mark.parametrize("name", STREAMING)
@pytest.mark.parametrize("bands", [3, 4])
def test_streaming_equals_whole_image(name, bands):
    torch.manual_seed(1)
    model = build_model(name, in_channels=bands).eval()
    image = torch.randn(2, bands, 40, 57)
    with torch.no_grad():
        whole = model(image)
        state = model.init_state(2, 57)
        lines = []
        for r in range(image.shape[2]):
            logit, state = model.step(image[:, :, r], state)
            lines.append(logit)
    torch.testing.assert_close(torch.stack(lines, 2), whole, atol=1e-5, rtol=0)


def test_scan_carries_state_across_strips():
    torch.manual_seed(2)
    model = build_model("scannernet").eval()
    image = torch.randn(1, 3, 30, 20)
    with torch.no_grad():
        top, state = model.scan(image[:, :, :12])
        bottom, _ = model.scan(image[:, :, 12:], state)
        torch.testing.assert_close(torch.cat([top, bottom], 2), model(image), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["scannernet", "scannernet_small"])
def test_state_size_depends_on_width_only(name):
    model = build_model(name).eval()
    state = model.init_state(1, 64)
    before = [t.shape for t in state]
    with torch.no_grad():
        for _ in range(300):
            _, state = model.step(torch.randn(1, 3, 64), state)
    assert [t.shape for t in state] == before
    assert sum(t.numel() * t.element_size() for t in state) == 64 * state_bytes_per_pixel(model)


def test_state_bytes_per_pixel():
    assert state_bytes_per_pixel(build_model("scannernet")) == 2 * (4 + 8) * 4
    assert state_bytes_per_pixel(build_model("scannernet_small")) == 2 * (4 + 4) * 4
    assert state_bytes_per_pixel(build_model("cfcn")) == 0


@pytest.mark.parametrize("name", REGISTRY)
def test_every_model_keeps_the_image_size(name):
    model = build_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 45)).shape == (1, 1, 37, 45)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ValueError, match="scannernet_small"):
        build_model("resnet")


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@needs_cuda
@pytest.mark.parametrize("name", STREAMING)
def test_cuda_streaming_matches_cpu(name):
    torch.manual_seed(3)
    model = build_model(name).eval()
    image = torch.randn(1, 3, 16, 64)
    with torch.no_grad():
        cpu = model(image)
        gpu = model.cuda()(image.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


def test_widening_small_into_scannernet_keeps_the_function():
    from scannernet_ros.learning.models import widen
    torch.manual_seed(0)
    small, big = build_model("scannernet_small").eval(), build_model("scannernet").eval()
    x = torch.randn(2, 3, 30, 40)
    widen(small, big, noise=0.0)
    torch.testing.assert_close(big(x), small(x), atol=1e-5, rtol=1e-5)
    widen(small, big, noise=1e-2)  # trainable new units, nearly the same function
    assert 0 < (big(x) - small(x)).abs().max() < 0.05
    with pytest.raises(ValueError, match="at least as wide"):
        widen(big, small)
