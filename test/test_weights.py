import pytest
import torch

from scannernet_ros.learning.models import build_model
from scannernet_ros.normalise import InputSpec
from scannernet_ros.weights import ModelInfo, WeightsError, load_model, resolve_model_path, save_model


def _save(tmp_path, name="scannernet", **config):
    torch.manual_seed(0)
    model = build_model(name, **config).eval()
    path = tmp_path / f"{name}.safetensors"
    info = ModelInfo(name, config=config, input=InputSpec(mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7)),
                     training={"data": "unit test"}, metrics={"iou": 0.5})
    save_model(path, model, info)
    return path, model, info


@pytest.mark.parametrize("name", ["scannernet", "scannernet_small", "baseline1d", "cfcn", "cunetpp"])
def test_round_trip_is_bit_exact(tmp_path, name):
    path, model, info = _save(tmp_path, name)
    loaded, loaded_info = load_model(path)
    x = torch.randn(1, 3, 24, 40)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded_info == info


def test_custom_hyperparameters_round_trip(tmp_path):
    path, model, _ = _save(tmp_path, "scannernet", hidden=(6, 5), kernel_size=5)
    loaded, info = load_model(path)
    assert info.config == {"hidden": (6, 5), "kernel_size": 5}
    assert loaded.cell2.hidden_channels == 5


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="no such file") as err:
        load_model(tmp_path / "nope.safetensors")
    assert "nope.safetensors" in str(err.value)


@pytest.mark.parametrize("keep", [0, 7, 100, -10])
def test_truncated_file(tmp_path, keep):
    path, _, _ = _save(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(WeightsError, match="scannernet.safetensors"):
        load_model(path)


def test_garbage_and_pickle_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save(build_model("scannernet").state_dict(), path)  # a pickle, under the right name
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_model(path)


def test_weights_for_another_architecture(tmp_path):
    from safetensors.torch import load_file, save_file
    path, _, info = _save(tmp_path, "scannernet_small")
    meta = info.to_metadata() | {"architecture": "scannernet", "config": "{}"}
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(WeightsError, match="has shape"):
        load_model(path)


def test_missing_tensor_and_unknown_architecture(tmp_path):
    from safetensors.torch import load_file, save_file
    path, _, info = _save(tmp_path, "baseline1d")
    tensors = load_file(str(path))
    tensors.pop("body.0.bias")
    save_file(tensors, str(path), metadata=info.to_metadata())
    with pytest.raises(WeightsError, match="missing"):
        load_model(path)
    save_file(tensors, str(path), metadata=info.to_metadata() | {"architecture": "vgg"})
    with pytest.raises(WeightsError, match="unknown architecture 'vgg'"):
        load_model(path)


def test_file_without_metadata(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "bare.safetensors"
    save_file(build_model("scannernet").state_dict(), str(path))
    with pytest.raises(WeightsError, match="format"):
        load_model(path)


def test_nan_weights_refused(tmp_path):
    model = build_model("baseline1d")
    with torch.no_grad():
        model.body[0].weight[0, 0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_model(path, model, ModelInfo("baseline1d"))
    with pytest.raises(WeightsError, match="NaN"):
        load_model(path)


def test_registry_name_without_shipped_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("SCANNERNET_MODELS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="no shipped weights"):
        resolve_model_path("cfcn")
    assert resolve_model_path("some/file.safetensors").name == "file.safetensors"


def test_save_leaves_previous_file_when_write_fails(tmp_path, monkeypatch):
    path, model, info = _save(tmp_path)
    before = path.read_bytes()
    import safetensors.torch as writer

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(writer, "save_file", boom)
    with pytest.raises(OSError):
        save_model(path, model, info)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_shipped_weights_load_and_each_has_a_model_card():
    from conftest import REPO
    from scannernet_ros.weights import models_dir
    files = sorted((REPO / "models").glob("*.safetensors"))
    assert files, "no shipped weights in models/"
    # the source tree's models/, or under colcon the same files installed in the package's share folder
    installed = {p.name: p.read_bytes() for p in models_dir().glob("*.safetensors")}
    assert installed == {p.name: p.read_bytes() for p in files}
    for path in files:
        model, info = load_model(path)
        # the architecture's own name, or a named variant of it (scannernet_swir: other bands)
        assert (info.architecture == path.stem or path.stem.startswith(info.architecture + "_")) and info.trained
        cv = info.metrics["cv"]   # cross-validated figures of the recipe, with the threshold's beside them
        assert 0 < cv["per_scene"]["iou"]["mean"] <= 1 and "threshold_per_scene" in cv
        card = path.with_suffix(".md").read_text()
        if "all_held_out" in cv:   # the grouped protocol: every held-out scene at once
            assert f"| {path.stem} | {100 * cv['all_held_out']['pooled_iou']:.1f} |" in card  # card and file agree
            assert f"| threshold (reference) | {100 * cv['threshold_all_held_out']['pooled_iou']:.1f} |" in card
        else:
            iou = cv["per_scene"]["iou"]
            assert f"{100 * iou['mean']:.1f} ± {100 * iou['sd']:.1f}" in card  # card and file agree
    assert resolve_model_path("scannernet_small") == models_dir() / "scannernet_small.safetensors"


def _with_metadata(tmp_path, **changes):
    """A valid scannernet_small file whose metadata fields are replaced by ``changes`` (raw strings)."""
    from safetensors.torch import load_file, save_file
    path, _, info = _save(tmp_path, "scannernet_small")
    meta = {**info.to_metadata(), **changes}
    save_file(load_file(str(path)), str(path), metadata=meta)
    return path


def _input(**fields):
    import json
    d = InputSpec().to_dict()
    d.update(fields)
    return json.dumps(d)


@pytest.mark.parametrize("changes,field", [
    ({"input": _input(mean=[float("nan"), 0.3, 0.3])}, "mean"),
    ({"input": _input(mean=[float("inf"), 0.3, 0.3])}, "mean"),
    ({"input": _input(std=[float("nan"), 0.2, 0.2])}, "std"),
    ({"input": _input(std=[1e-300, 0.2, 0.2])}, "std"),
    ({"input": _input(std=[0.0, 0.2, 0.2])}, "std"),
    ({"input": _input(dn_gain=float("nan"))}, "dn_gain"),
    ({"input": _input(u8_gain=-1.0)}, "u8_gain"),
    ({"input": _input(bands=["red", "red", "red"])}, "bands"),
    ({"input": _input(bands=["red", "green", "swir"])}, "bands"),
    ({"input": _input(mean=["a", 0.3, 0.3])}, "mean"),
    ({"input": _input(colour="blue")}, "unknown keys"),
    ({"input": "[1, 2, 3]"}, "'input' must be an object"),
    ({"input": "not json"}, "bad metadata"),
    ({"config": "[4, 4]"}, "'config' must be an object"),
    ({"config": '{"hidden": [4, 100000000], "kernel_size": 7}'}, "config.hidden"),
    ({"config": '{"hidden": [4, 3000], "kernel_size": 7}'}, "config.hidden"),
    ({"config": '{"hidden": [4, 4.5], "kernel_size": 7}'}, "config.hidden"),
    ({"config": '{"hidden": [4, 4], "kernel_size": 8}'}, "config.kernel_size"),
    ({"config": '{"hidden": [4, 4], "kernel_size": 7, "depth": 3}'}, "does not take"),
    ({"architecture": "resnet"}, "unknown architecture"),
])
def test_bad_metadata_is_one_error_naming_file_and_field(tmp_path, changes, field):
    path = _with_metadata(tmp_path, **changes)
    with pytest.raises(WeightsError) as err:
        load_model(path)
    message = str(err.value)
    assert str(path) in message and field in message and "\n" not in message


def test_not_a_regular_file_has_its_own_message(tmp_path):
    with pytest.raises(WeightsError, match="not a regular file"):
        load_model(tmp_path)
    with pytest.raises(WeightsError, match="not a regular file"):
        load_model("/dev/zero")


def test_threshold_weights_round_trip(tmp_path):
    model = build_model("threshold", t=0.3)
    path = tmp_path / "threshold.safetensors"
    spec = InputSpec(mean=(0.0,) * 3, std=(1.0,) * 3)
    save_model(path, model, ModelInfo("threshold", config={"t": 0.3}, input=spec, trained=True))
    loaded, info = load_model(path)
    assert info.config == {"t": 0.3} and sum(p.numel() for p in loaded.parameters()) == 0
    x = torch.tensor([[[[0.29, 0.31]], [[0.29, 0.31]], [[0.29, 0.31]]]])   # (1, 3, 1, 2) reflectance
    assert (loaded(x) > 0).tolist() == [[[[False, True]]]]
