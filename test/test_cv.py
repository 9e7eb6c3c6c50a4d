"""Cross-validation folds, the threshold reference and the per-scene protocol, on small data."""
import math

import numpy as np
import pytest

from scannernet_ros.tools.cv import make_folds, stratum
from scannernet_ros.learning.datasets import Sample
from scannernet_ros.metrics import NO_DATA, Breakdown, Evaluation, edge_band
from scannernet_ros.learning.train import fit_threshold

BIOME_SCENES = [f"{b}_{i:02d}" for b in ("Barren", "Forest", "Water", "SnowIce") for i in range(5)] + [
    "LC08_L1TP_002053_20160520_20170324_01_T1"]


@pytest.mark.parametrize("k", [2, 3, 4, 7])
def test_folds_partition_scenes_and_spread_each_biome(k):
    folds = make_folds(BIOME_SCENES, k, seed=0, grouping="scene")
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(BIOME_SCENES) and len(flat) == len(set(flat))  # no scene in two folds
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for biome in ("Barren", "Forest", "Water", "SnowIce"):
        per_fold = [sum(stratum(s) == biome for s in f) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1
    assert make_folds(BIOME_SCENES, k, seed=0, grouping="scene") == folds    # seeded


def test_bad_fold_counts_are_one_clear_error():
    for k in (0, 1, len(BIOME_SCENES) + 1):
        with pytest.raises(ValueError, match="--folds"):
            make_folds(BIOME_SCENES, k, seed=0, grouping="scene")


def test_leave_one_group_out_holds_each_biome_out_whole_and_38_cloud_on_its_own():
    from scannernet_ros.tools.cv import group_of
    folds = make_folds(BIOME_SCENES, 4, seed=0)   # the default grouping: k plays no part
    assert len(folds) == 5
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(BIOME_SCENES) and len(flat) == len(set(flat))
    for fold in folds:
        assert len({group_of(s) for s in fold}) == 1            # one biome per held-out fold
    groups = [group_of(f[0]) for f in folds]
    assert len(set(groups)) == len(groups)                       # no biome in two folds
    assert "38-Cloud" in groups and group_of("LC08_L1TP_002053_20160520_20170324_01_T1") == "38-Cloud"
    with pytest.raises(ValueError, match="two groups"):
        make_folds([f"Barren_{i:02d}" for i in range(4)], 2, seed=0)


def test_stratum_reads_the_biome_name():
    assert stratum("GrassCrops_01") == "GrassCrops" and stratum("LC08_L1TP_x") == "other"


def _sample(name, brightness, mask):
    rho = np.broadcast_to(np.asarray(brightness, np.float32), (4, *mask.shape)).copy()
    return Sample(name, name, rho, mask.astype(np.uint8))


def test_threshold_fit_finds_the_separating_brightness():
    bright = np.tile(np.linspace(0.0, 1.0, 101, dtype=np.float32), (4, 1))
    mask = (bright > 0.4).astype(np.uint8)
    mask[0, 0] = NO_DATA
    t, iou = fit_threshold([_sample("a", bright, mask)], ("red", "green", "blue"))
    assert 0.395 <= t <= 0.41 and iou == 1.0
    with pytest.raises(ValueError, match="no cloud"):
        fit_threshold([_sample("b", bright, np.zeros_like(mask))], ("red", "green", "blue"))


def test_cloud_free_scenes_count_the_same_for_every_method():
    cloudy = np.array([1, 1, 0, 0], np.uint8)
    clear = np.zeros(4, np.uint8)
    quiet, noisy = Evaluation(), Evaluation()
    for ev, fp in ((quiet, 0), (noisy, 1)):
        ev.add("cloudy", np.array([1, 1, 0, 0], bool), cloudy)
        ev.add("clear", np.array([fp, 0, 0, 0], bool), clear)
    q, n = quiet.scene_mean(), noisy.scene_mean()
    assert q["iou"] == n["iou"] == 1.0 and q["iou_scenes"] == n["iou_scenes"] == 1   # clear scene: same for both
    assert q["cloud_free_scenes"] == n["cloud_free_scenes"] == 1
    assert q["cloud_free_fp_rate"] == 0.0 and n["cloud_free_fp_rate"] == 0.25
    missed = Evaluation()
    missed.add("cloudy", np.zeros(4, bool), cloudy)
    assert missed.scene_mean()["precision"] == 0.0 and missed.scene_mean()["precision_scenes"] == 1


def test_no_data_pixels_count_nowhere():
    truth = np.array([[1, NO_DATA], [0, NO_DATA]], np.uint8)
    ev = Evaluation()
    ev.add("s", np.ones((2, 2), bool), truth)
    cm = ev.per_scene["s"]
    assert (cm.tp, cm.fp, cm.fn, cm.tn) == (1, 1, 0, 0)


def test_breakdown_thin_thick_edges_and_warmup():
    truth = np.zeros((32, 20), np.uint8)
    truth[:, 10:] = 1
    thin = np.zeros_like(truth, bool)
    thin[:, 15:] = True
    pred = np.zeros_like(truth, bool)
    pred[:, 10:15] = True          # thick found, thin missed
    pred[:4, :3] = True            # false positives in the first rows only
    b = Breakdown()
    b.add(pred, truth, thin)
    r = b.report()
    assert r["recall_thick"] == 1.0 and r["recall_thin"] == 0.0
    assert r["fp_rate_first_16_rows"] == pytest.approx(12 / (16 * 10)) and r["fp_rate_other_rows"] == 0.0
    band = edge_band(truth)
    assert band[:, 7:13].all() and not band[:, :7].any() and not band[:, 13:].any()
    no_thin = Breakdown()
    no_thin.add(pred, truth)
    assert math.isnan(no_thin.report()["recall_thin"])


def test_cv_command_end_to_end_on_small_data(tmp_path, capsys):
    import json

    from scannernet_ros.tools.cli import main
    out = tmp_path / "cv"
    rc = main(["cv", "--data", "synthetic:6:40:0.3-1.0", "--models", "baseline1d", "--folds", "2",
               "--grouping", "scene", "--epochs", "1", "--steps-per-epoch", "1", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "cv.json").read_text())
    assert list(summary["models"]) == ["threshold", "baseline1d"]       # the reference is always there
    assert all(len(m["per_fold"]) == 2 for m in summary["models"].values())
    held = [set(f) for f in summary["folds"]]
    assert not held[0] & held[1] and len(held[0] | held[1]) == 6
    assert "| threshold |" in (out / "cv.md").read_text()

    # shipping: the figures travel with the weights and into the card
    from scannernet_ros.weights import load_model
    models = tmp_path / "models"
    models.mkdir()
    # fold weights never saw every scene: shipping them with the cv figures is refused
    assert main(["ship", str(out / "fold0" / "baseline1d" / "best.safetensors"), "--cv", str(out / "cv.json"),
                 "--models-dir", str(models)]) == 2
    assert "other pixels" in capsys.readouterr().err
    from scannernet_ros.tools.cv import train_command
    command = train_command("baseline1d", summary["recipe"], summary["data"], str(tmp_path / "run"))
    assert main(command.split()[1:]) == 0                 # the card's own training command
    assert main(["ship", str(tmp_path / "run" / "best.safetensors"), "--cv", str(out / "cv.json"),
                 "--models-dir", str(models)]) == 0
    _, info = load_model(models / "baseline1d.safetensors")
    per_scene = info.metrics["cv"]["per_scene"]["iou"]
    assert per_scene == summary["models"]["baseline1d"]["per_scene"]["iou"]
    card = (models / "baseline1d.md").read_text()
    held = summary["models"]["baseline1d"]["all_held_out"]
    assert f"| baseline1d | {100 * held['pooled_iou']:.1f} |" in card and "threshold (reference)" in card
    assert "cut 0.30" in card and "Decision cut:" in card
    # a named variant of an architecture (what scannernet_swir is): listed, runnable, never another's name
    assert main(["ship", str(tmp_path / "run" / "best.safetensors"), "--cv", str(out / "cv.json"),
                 "--models-dir", str(models), "--name", "baseline1d_wide"]) == 0
    from scannernet_ros.weights import shipped_models
    from scannernet_ros.zoo import runnable_per_line
    assert shipped_models(models) == ["baseline1d", "baseline1d_wide"]
    assert runnable_per_line(models) == ["baseline1d", "baseline1d_wide"]
    assert (models / "baseline1d_wide.md").read_text().startswith("# baseline1d_wide")
    assert main(["ship", str(tmp_path / "run" / "best.safetensors"), "--cv", str(out / "cv.json"),
                 "--models-dir", str(models), "--name", "cfcn"]) == 2
    assert "another architecture" in capsys.readouterr().err
    assert main(["cv", "--data", "synthetic:3:40", "--folds", "9", "--grouping", "scene",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--folds" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("[]", "not a cv.json"), ('{"models": {"x": {}}, "recipe": {}, "folds": []}', "no threshold row"),
    ('{"models": {"threshold": {"pooled": 1}}, "recipe": {}, "folds": []}', "lacks"), ("{", "not JSON")])
def test_ship_with_a_malformed_cv_json_is_one_line_exit_2(tmp_path, capsys, random_weights, content, message):
    from scannernet_ros.tools.cli import main
    (tmp_path / "cv.json").write_text(content)
    assert main(["ship", str(random_weights), "--cv", str(tmp_path / "cv.json"), "--models-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "cv.json" in err and "Traceback" not in err


def test_ship_refuses_weights_of_another_recipe_or_data(tmp_path, capsys):
    import json

    from scannernet_ros.tools.cli import main
    out = tmp_path / "cv"
    assert main(["cv", "--data", "synthetic:4:40:0.3-1.0", "--models", "baseline1d", "--folds", "2", "--grouping",
                 "scene", "--epochs", "1", "--steps-per-epoch", "1", "--out", str(out)]) == 0
    base = ["train", "--model", "baseline1d", "--val-fraction", "0", "--device", "cpu", "--steps-per-epoch", "1",
            "--ema", "0.99", "--clip", "1"]
    for extra, message in ((["--data", "synthetic:2:40", "--max-epochs", "1"], "trained on"),
                           (["--data", "synthetic:4:40:0.3-1.0", "--max-epochs", "2"], "max_epochs")):
        run = tmp_path / f"run{len(message)}"
        assert main([*base, *extra, "--out", str(run)]) == 0
        assert main(["ship", str(run / "best.safetensors"), "--cv", str(out / "cv.json"),
                     "--models-dir", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err
    assert json.loads((out / "cv.json").read_text())["training_fingerprint"]


def test_cv_refuses_a_budget_of_no_epochs_before_any_work(tmp_path, capsys):
    from scannernet_ros.tools.cli import main
    for epochs in ("0", "-1"):
        assert main(["cv", "--data", "synthetic:2:40", "--epochs", epochs, "--out", str(tmp_path / "x")]) == 2
        assert "--epochs" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_only_sources_train_every_fold_and_are_never_scored(tmp_path):
    import json

    from scannernet_ros.tools.cli import main
    out = tmp_path / "cv"
    assert main(["cv", "--data", "synthetic:4:40", "--train-only", "synthetic:2:32", "--models", "baseline1d",
                 "--folds", "2", "--grouping", "scene", "--epochs", "1", "--steps-per-epoch", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "cv.json").read_text())
    assert summary["train_only"] == ["synthetic:2:32"]
    scored = {s for fold in summary["folds"] for s in fold}
    assert len(scored) == 4 and not any("32x32" in s for s in scored)
    assert all(r["train_samples"] == 2 + 2 for r in summary["models"]["baseline1d"]["per_fold"])
    assert "never scored" in (out / "cv.md").read_text()
    # a training-only scene that is also scored would leak the held-out fold into training
    assert main(["cv", "--data", "synthetic:4:40", "--train-only", "synthetic:2:40", "--folds", "2",
                 "--grouping", "scene", "--out", str(tmp_path / "leak")]) == 2


def _fold(values: dict[float, tuple[float, float]]) -> dict:
    from scannernet_ros.tools.cv import DECISION_GRID, _key
    return {"fold": 0, "by_threshold": {
        _key(t): {"pooled": {"iou": values.get(t, (0.1, 0.1))[0]}, "per_scene_mean": {"iou": values.get(t, (0.1, 0.1))[1]},
                  "breakdown": {}} for t in DECISION_GRID}}


def test_each_fold_is_scored_at_the_threshold_the_other_folds_choose():
    from scannernet_ros.tools.cv import choose_threshold, nested
    rows = [_fold({0.3: (0.9, 0.9), 0.5: (0.5, 0.5)}),     # fold 0 alone would pick 0.3
            _fold({0.5: (0.95, 0.95), 0.3: (0.5, 0.5)}),
            _fold({0.5: (0.95, 0.95), 0.3: (0.5, 0.5)})]
    assert choose_threshold(rows) == "0.50"      # 0.5 wins on the mean of all three
    scored = nested(rows)
    assert [r["decision_threshold"] for r in scored] == [0.5, 0.5, 0.5]
    assert scored[0]["pooled"]["iou"] == 0.5     # fold 0 does not get to pick its own best (0.3)
    assert scored[0]["at_0.5"]["pooled"]["iou"] == 0.5
    rows[1] = _fold({0.3: (0.9, 0.9), 0.5: (0.5, 0.5)})
    assert nested(rows)[2]["decision_threshold"] == 0.3   # folds 0 and 1 now agree on 0.3


def test_the_cut_moves_from_one_half_only_when_it_wins_by_more_than_the_spread():
    from scannernet_ros.tools.cv import choose_threshold
    steady = [_fold({0.3: (0.8, 0.8), 0.5: (0.7, 0.7)}) for _ in range(3)]
    assert choose_threshold(steady) == "0.30"       # +0.1 in every fold
    noisy = [_fold({0.3: (0.95, 0.95), 0.5: (0.5, 0.5)}),  # +0.45 in one fold ...
             _fold({0.3: (0.45, 0.45), 0.5: (0.6, 0.6)}),   # ... -0.15 in the others
             _fold({0.3: (0.45, 0.45), 0.5: (0.6, 0.6)})]
    assert choose_threshold(noisy) == "0.50"        # the mean gain (0.05) is within the spread


@pytest.mark.parametrize("model", ["scannernet", "baseline1d", "threshold"])
def test_folding_the_decision_threshold_moves_the_cut_to_one_half(model):
    import torch

    from scannernet_ros.learning.models import build_model
    from scannernet_ros.tools.cv import fold_decision_threshold
    from scannernet_ros.weights import ModelInfo
    torch.manual_seed(0)
    net = build_model(model).eval()
    info = ModelInfo(model, {"t": 0.26} if model == "threshold" else {})
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        before = torch.sigmoid(net(x))
        fold_decision_threshold(net, info, 0.3)
        after = torch.sigmoid(net(x))
    assert torch.equal(after >= 0.5, before >= 0.3)
    assert info.training["decision_threshold"] == 0.3
    with pytest.raises(ValueError):
        fold_decision_threshold(net, info, 1.0)


def test_reuse_scores_the_fold_weights_a_run_left_and_retrains_on_another_recipe(tmp_path, capsys):
    import json

    from scannernet_ros.tools.cli import main
    args = ["cv", "--data", "synthetic:4:40:0.3-1.0", "--models", "baseline1d", "--folds", "2", "--steps-per-epoch", "1",
            "--grouping", "scene", "--out", str(tmp_path)]
    assert main([*args, "--epochs", "1"]) == 0
    first = json.loads((tmp_path / "cv.json").read_text())
    capsys.readouterr()
    assert main([*args, "--epochs", "1", "--reuse"]) == 0
    assert capsys.readouterr().out.count("reusing") == 4      # threshold and baseline1d, two folds each
    again = json.loads((tmp_path / "cv.json").read_text())["models"]
    for key in ("pooled", "per_scene", "decision_threshold", "at_0.5"):   # the same weights, scored alike
        assert json.dumps(again["baseline1d"][key]) == json.dumps(first["models"]["baseline1d"][key])
    assert main([*args, "--epochs", "2", "--reuse"]) == 0          # another budget: trained again
    assert "reusing" not in capsys.readouterr().out
    # the same scene names over other pixels (scenes replaced in --data): nothing is reused
    replaced = [a.replace("0.3-1.0", "0.2-0.9") for a in args]
    assert main([*replaced, "--epochs", "2", "--reuse"]) == 0
    out = capsys.readouterr().out
    assert "reusing" not in out and "not trained with this recipe on these scenes" in out
