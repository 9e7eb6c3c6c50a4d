"""ONNX export of the per-line step: run in onnxruntime over a whole scene, it gives the stepper's
probabilities; every way it can be misused is one error and exit status 2."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from scannernet_ros.tools.cli import main
from scannernet_ros.scenes.synthetic import SyntheticScene
from scannernet_ros.streaming import LineSegmenter

# A skip mark, not a module-level importorskip: launch_testing's pytest plugin (in every ROS install)
# imports each test module while collecting, and a Skipped raised there skips the whole folder.
pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")),
    reason="the export extra (onnx, onnxruntime) is not installed (pip install -r requirements-test.txt)")

from scannernet_ros.tools.export import ExportError, OnnxStep, export, verify  # noqa: E402


@pytest.mark.parametrize("model", ["scannernet", "scannernet_small", "baseline1d", "threshold"])
def test_export_reproduces_the_stepper_over_a_whole_scene(model, tmp_path):
    path = export(model, tmp_path)
    step = OnnxStep(path)
    assert step.info.architecture == model and step.meta["input"]
    rho, _ = SyntheticScene(384, 384, seed=5).rows(0, 384)
    rho = np.ascontiguousarray(rho[:3], np.float32)
    expected = LineSegmenter.from_file(model, reset_gap_lines=0).segment_image(rho, "float")
    got = np.stack([step(rho[:, r]) for r in range(rho.shape[1])])
    assert got.shape == (384, 384)
    assert np.abs(got - expected).max() <= 1e-5
    assert 0.0 < (expected > 0.5).mean() < 1.0 or model == "threshold"  # not a trivially constant mask


def test_width_is_dynamic(tmp_path):
    step = OnnxStep(export("scannernet", tmp_path))
    for width in (384, 17, 6916):
        assert step(np.full((3, width), 0.3, np.float32)).shape == (width,)


def test_verify_refuses_an_export_of_other_weights(tmp_path):
    path = export("scannernet_small", tmp_path)
    with pytest.raises(ExportError, match="other weights"):
        verify(path, "scannernet")
    assert verify(path, "scannernet_small") <= 1e-5


@pytest.mark.parametrize("argv, message", [
    (["export", "--format", "tflite"], "unknown export format 'tflite'"),
    (["export", "cfcn"], "segments whole images"),
    (["export", "scannernet", "--verify", "missing.onnx"], "not a readable ONNX model"),
    (["export", "--verify", "x.onnx"], "name exactly one"),
])
def test_bad_requests_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_onnxruntime_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    assert main(["export", "scannernet", "--check", "--out", str(tmp_path)]) == 2
    assert "needs onnxruntime" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_foreign_onnx_file_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "f.onnx")
    with pytest.raises(ExportError, match="not a scannernet_ros export"):
        OnnxStep(tmp_path / "f.onnx")


def _edit(path, tmp_path, change):
    """A copy of an export with ``change(model)`` applied, its metadata (hashes included) kept."""
    import onnx
    model = onnx.load(str(path))
    change(model)
    out = tmp_path / "edited.onnx"
    onnx.save(model, str(out))
    return out


def _set_initializer(model, name_part: str, update) -> None:
    from onnx import numpy_helper
    for i, tensor in enumerate(model.graph.initializer):
        if name_part in tensor.name:
            array = numpy_helper.to_array(tensor).copy()
            update(array)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, tensor.name))
            return
    raise AssertionError(f"no initializer named like {name_part!r}")


@pytest.mark.parametrize("update", [lambda a: a.__setitem__(..., np.nan), lambda a: a.__iadd__(1e-3)],
                         ids=["nan", "tiny-edit"])
def test_verify_catches_edited_tensors_with_the_metadata_kept(tmp_path, capsys, update):
    path = export("scannernet", tmp_path)
    import onnx
    weights = [t.name for t in onnx.load(str(path)).graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2]
    edited = _edit(path, tmp_path, lambda m: _set_initializer(m, weights[0], update))
    assert main(["export", "scannernet", "--verify", str(edited)]) == 2
    err = capsys.readouterr().err
    assert "changed after export" in err and "matches" not in err


def test_verify_treats_a_nan_output_as_a_mismatch(tmp_path, monkeypatch):
    path = export("scannernet", tmp_path)
    monkeypatch.setattr(OnnxStep, "__call__", lambda self, x: np.full(x.shape[1], np.nan, np.float32))
    with pytest.raises(ExportError, match="non-finite"):
        verify(path, "scannernet")


def test_an_export_without_its_config_metadata_is_not_a_scannernet_export(tmp_path, capsys):
    path = export("scannernet", tmp_path)
    edited = _edit(path, tmp_path, lambda m: [m.metadata_props.remove(p) for p in list(m.metadata_props)
                                               if p.key == "config"])
    assert main(["export", "scannernet", "--verify", str(edited)]) == 2
    err = capsys.readouterr().err
    assert "not a scannernet_ros export" in err and "Traceback" not in err
