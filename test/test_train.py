import math
import json
import os
import subprocess
import sys

import pytest
import torch

from scannernet_ros.learning.train import TrainConfig, train
from scannernet_ros.weights import load_model


def _cfg(tmp_path, **kw):
    base = dict(model="scannernet_small", data=["synthetic:6:48"], batch_size=4, crop=32, strip=8,
                steps_per_epoch=4, max_epochs=4, patience=100, lr=1e-2, out=str(tmp_path / "run"), device="cpu")
    return TrainConfig(**{**base, **kw})


def test_a_few_steps_lower_the_loss(tmp_path):
    progress = train(_cfg(tmp_path, max_epochs=6), log=lambda *_: None)
    losses = [h["train_loss"] for h in progress["history"]]
    assert losses[-1] < losses[0]
    model, info = load_model(tmp_path / "run" / "best.safetensors")
    assert info.trained and info.training["epochs"] >= 1 and "val_pooled" in info.metrics
    for name in ("last.safetensors", "train_state.safetensors", "log.csv", "log.json", "curves.png"):
        assert (tmp_path / "run" / name).is_file()


def test_weight_averaging_keeps_and_resumes_an_average(tmp_path):
    train(_cfg(tmp_path, max_epochs=2, ema=0.9), log=lambda *_: None)
    best, _ = load_model(tmp_path / "run" / "best.safetensors")
    last, _ = load_model(tmp_path / "run" / "last.safetensors")
    assert any(not (a == b).all() for a, b in zip(best.state_dict().values(), last.state_dict().values()))
    progress = train(_cfg(tmp_path, max_epochs=3, ema=0.9, resume=True), log=lambda *_: None)
    assert progress["epoch"] == 3


def test_resume_continues_where_it_stopped(tmp_path):
    train(_cfg(tmp_path, max_epochs=2), log=lambda *_: None)
    first = json.loads((tmp_path / "run" / "log.json").read_text())
    progress = train(_cfg(tmp_path, max_epochs=4, resume=True), log=lambda *_: None)
    history = progress["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[:2] == first
    assert progress["step"] == 16


def test_resume_is_exact_whatever_was_written_last(tmp_path):
    """A kill after the checkpoint but before last.safetensors: --resume reads the checkpoint only,
    so it neither reruns nor skips an epoch."""
    train(_cfg(tmp_path, max_epochs=2), log=lambda *_: None)
    (tmp_path / "run" / "last.safetensors").unlink()      # as if killed right after the checkpoint
    progress = train(_cfg(tmp_path, max_epochs=3, resume=True), log=lambda *_: None)
    assert [h["epoch"] for h in progress["history"]] == [1, 2, 3]


def test_resume_with_another_model_or_a_broken_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    from scannernet_ros.tools.cli import main
    base = ["train", "--data", "synthetic:6:48", "--batch-size", "4", "--crop", "32", "--strip", "8",
            "--steps-per-epoch", "1", "--max-epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run")]
    assert main([*base, "--model", "scannernet_small"]) == 0
    assert main([*base, "--model", "scannernet", "--resume"]) == 2
    assert main([*base, "--model", "scannernet_small", "--bands", "rgbn", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("--resume needs the run's own --model and --bands") == 2 and "Traceback" not in err
    state = tmp_path / "run" / "train_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    assert main([*base, "--model", "scannernet_small", "--resume"]) == 2
    assert "unreadable training checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["baseline1d", "cfcn", "cunetpp"])
def test_every_model_trains(tmp_path, model):
    progress = train(_cfg(tmp_path, model=model, max_epochs=1), log=lambda *_: None)
    assert progress["epoch"] == 1


@pytest.mark.parametrize("stopping", [["--max-epochs", "2"], ["--max-epochs", "6", "--patience", "1", "--lr", "0"]],
                         ids=["epoch_limit", "early_stop"])
def test_torchrun_two_cpu_processes(tmp_path, stopping):
    """DistributedDataParallel over gloo, two processes, a few steps; both ranks stop together,
    also when rank 0's validation ends the run early."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "scannernet_ros.learning.train", "--model", "scannernet_small", "--data", "synthetic:6:48",
           "--batch-size", "4", "--crop", "32", "--strip", "8", "--steps-per-epoch", "2",
           *stopping, "--device", "cpu", "--out", str(tmp_path / "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    history = json.loads((tmp_path / "ddp" / "log.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2], (history, result.stdout[-2000:])
    assert "2 process(es)" in result.stdout + result.stderr


def test_scene_mean_selection_and_clipping(tmp_path):
    progress = train(_cfg(tmp_path, max_epochs=2, select="scene_mean", clip=0.5, data=["synthetic:8:48:0.6-1.2"]),
                     log=lambda *_: None)
    row = progress["history"][-1]
    assert row["val_iou"] == row["val_iou_scene_mean"] or math.isnan(row["val_iou_scene_mean"])
    assert 0.0 <= row["val_iou_pooled"] <= 1.0
    _, info = load_model(tmp_path / "run" / "best.safetensors")
    assert "val_scene_mean" in info.metrics and info.training["config"]["clip"] == 0.5


def test_init_widens_a_trained_small_network(tmp_path):
    train(_cfg(tmp_path / "small", max_epochs=1), log=lambda *_: None)
    small_file = tmp_path / "small" / "run" / "best.safetensors"
    progress = train(_cfg(tmp_path, model="scannernet", max_epochs=1, init=str(small_file), lr=1e-9),
                     log=lambda *_: None)
    small, _ = load_model(small_file)
    big, info = load_model(tmp_path / "run" / "last.safetensors")
    x = torch.rand(1, 3, 20, 24)
    assert (big(x) - small(x)).abs().max() < 0.05 and info.training["config"]["init"] == str(small_file)
    assert progress["epoch"] == 1


def test_composited_clouds_keep_ground_and_no_data_and_label_thick_cover():
    import numpy as np
    import torch

    from scannernet_ros.learning.composite import composite
    x = torch.full((3, 8, 8), 0.1)
    y = torch.zeros(8, 8)
    y[0] = -1.0                                     # a no-data row
    bank = torch.zeros(1, 3, 8, 8)
    bank[0, :, 4:] = 0.9                            # thick cloud over the lower half, nothing above
    out_x, out_y = composite(x, y, bank, np.random.default_rng(0))
    assert torch.equal(out_y[0], y[0])                                  # no data stays no data
    rows, cols = (out_y[4:] == 1).all(), (out_y[1:, 4:] == 1).all()   # flipped or turned, still labelled
    assert rows or cols
    assert int((out_y == 1).sum()) == (32 if rows else 28)
    assert torch.isclose(out_x[:, out_y == 0], torch.tensor(0.1)).all()  # clear ground untouched
    assert (out_x[:, out_y == 1] > 0.5).all()                            # under thick cloud: bright


def test_composite_without_the_generator_installed_is_one_clear_error(monkeypatch):
    import sys

    import pytest

    from scannernet_ros.learning.composite import cloud_bank
    monkeypatch.setitem(sys.modules, "satellite_cloud_generator", None)
    with pytest.raises(ValueError, match="satellite-cloud-generator"):
        cloud_bank(16, 3, 0)


def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path):
    """Stopped after epoch 2 of 3 and resumed: the same weights, to the bit, as one run of 3 epochs
    with the same seed (the batch stream is part of the checkpoint)."""
    import shutil
    train(_cfg(tmp_path / "a", max_epochs=3, ema=0.9), log=lambda *_: None)
    train(_cfg(tmp_path / "b", max_epochs=2, ema=0.9), log=lambda *_: None)
    train(_cfg(tmp_path / "b", max_epochs=3, ema=0.9, resume=True), log=lambda *_: None)
    for name in ("last", "best"):
        a, _ = load_model(tmp_path / "a" / "run" / f"{name}.safetensors")
        b, _ = load_model(tmp_path / "b" / "run" / f"{name}.safetensors")
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert (x == y).all(), f"{name}.{key} differs after resume"
    shutil.rmtree(tmp_path / "a")


def test_a_kill_after_the_last_epochs_state_still_ends_with_that_epochs_weights(tmp_path):
    """SIGKILL after train_state of the last epoch, before last/best: --resume writes them from the state."""
    import shutil
    train(_cfg(tmp_path / "a", max_epochs=3, val_fraction=0.0), log=lambda *_: None)
    run = tmp_path / "a" / "run"
    state = run / "train_state.safetensors"
    shutil.copy(state, tmp_path / "state3")
    train(_cfg(tmp_path / "b", max_epochs=2, val_fraction=0.0), log=lambda *_: None)
    shutil.copy(tmp_path / "state3", tmp_path / "b" / "run" / "train_state.safetensors")  # epoch 3's state beside epoch 2's weights
    progress = train(_cfg(tmp_path / "b", max_epochs=3, val_fraction=0.0, resume=True), log=lambda *_: None)
    assert progress["epoch"] == 3
    a, info_a = load_model(run / "best.safetensors")
    b, info_b = load_model(tmp_path / "b" / "run" / "best.safetensors")
    assert info_b.training["epochs"] == 3
    assert all((x == y).all() for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_painted_snow_is_bright_in_the_visible_dark_at_swir1_and_stays_clear():
    import numpy as np
    import torch

    from scannernet_ros.learning.snow import paint_snow
    bands = ("red", "green", "blue", "nir", "swir1")
    x = torch.full((5, 32, 32), 0.08)
    y = torch.zeros(32, 32)
    y[:, :8] = 1.0          # cloud on the left
    y[0] = -1.0             # a no-data row
    x[:, :, :8] = 0.6
    painted = 0
    for seed in range(20):
        out_x, out_y = paint_snow(x, y, bands, np.random.default_rng(seed))
        assert torch.equal(out_y, y)                                   # snow is clear ground
        assert torch.equal(out_x[:, y != 0], x[:, y != 0])             # cloud and no data untouched
        snow = (out_x[0] - x[0]).abs() > 0.05                          # where visible changed
        painted += int(snow.sum())
        if snow.any():
            assert (out_x[0][snow] > out_x[4][snow]).all()             # brighter in red than at 1.6 um
            assert out_x[4][snow].max() < 0.25
    assert painted > 20 * 24 * 31 * 0.2                                # covers 20 % or more on average


def test_snow_without_swir1_is_one_clear_error(tmp_path):
    import pytest

    from scannernet_ros.learning.train import TrainConfig, train
    with pytest.raises(ValueError, match="SWIR1"):
        train(TrainConfig(data=["synthetic:2:32"], snow=0.5, val_fraction=0, max_epochs=1, steps_per_epoch=1,
                          out=str(tmp_path / "run")), log=lambda *_: None)
