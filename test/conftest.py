"""Shared test fixtures: where the development data lives and how to skip without it."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def _test_the_installed_package() -> None:
    """Under ``colcon test`` pytest runs in the source folder, whose ``scannernet_ros`` has no
    compiled kernel (colcon builds it into the install space).  Test what colcon installed."""
    source = Path(__file__).resolve().parent.parent
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        site = Path(prefix) / "lib" / version / "site-packages"
        if (site / "scannernet_ros" / "__init__.py").is_file() and site.resolve() != source:
            sys.path.insert(0, str(site))
            return


_test_the_installed_package()

import pytest  # noqa: E402
import torch  # noqa: E402

# Each test session on its own DDS domain, on loopback only: parallel runs and other ROS users on
# the machine cannot cross-talk with the tests.  Set before rclpy is imported anywhere.
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SCANNERNET_SHARED", REPO.parent / "shared"))
CLOUD38 = SHARED / "data" / "38-Cloud-sample"
BIOME = SHARED / "data" / "l8-biome-sample"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long load tests, run by `make soak` only")
    config.addinivalue_line("markers", "cuda: needs a CUDA device")


needs_cloud38 = pytest.mark.skipif(
    not CLOUD38.is_dir(), reason=f"38-Cloud sample not found at {CLOUD38} (set SCANNERNET_SHARED)")
needs_biome = pytest.mark.skipif(
    not BIOME.is_dir(), reason=f"L8 Biome sample not found at {BIOME} (set SCANNERNET_SHARED)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="CUDA is not available on this machine")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests are small; one intra-op thread keeps them deterministic and quick on 2 cores."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """An untrained ScannerNet file: the tests check plumbing and equality, not accuracy."""
    from scannernet_ros.learning.models import build_model
    from scannernet_ros.weights import ModelInfo, save_model
    from scannernet_ros.normalise import InputSpec, Normaliser
    from scannernet_ros.scenes.synthetic import SyntheticScene
    torch.manual_seed(1234)
    model = build_model("scannernet").eval()
    # Centre the output on synthetic scenes so masks hold both classes: tests that compare masks
    # must not pass merely because everything is clear.
    rho, _ = SyntheticScene(64, 64, seed=99).rows(0, 64)
    with torch.no_grad():
        logits = model(torch.from_numpy(Normaliser(InputSpec())(rho[:3].copy(), "float"))[None])
        model.head.bias -= logits.median()
    path = tmp_path_factory.mktemp("weights") / "scannernet_random.safetensors"
    save_model(path, model, ModelInfo("scannernet", {"hidden": (4, 8), "kernel_size": 9}))
    return path


@pytest.fixture
def ros():
    """A fresh rclpy context per test."""
    import rclpy
    rclpy.init()
    yield
    rclpy.try_shutdown()
