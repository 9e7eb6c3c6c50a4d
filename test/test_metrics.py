import math

import numpy as np
import pytest

from scannernet_ros.metrics import Confusion, Evaluation, confusion


def test_hand_computed_confusion():
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 1]], bool)
    truth = np.array([[1, 0, 0, 1], [1, 255, 0, 255]], np.uint8)
    cm = confusion(pred, truth)
    assert (cm.tp, cm.fp, cm.fn, cm.tn) == (2, 1, 1, 2)
    s = cm.scores()
    assert s["iou"] == pytest.approx(2 / 4)
    assert s["f1"] == pytest.approx(4 / 6)
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["specificity"] == pytest.approx(2 / 3)


def test_empty_ground_truth_and_all_cloud():
    clear = np.zeros((4, 4), np.uint8)
    s = confusion(np.zeros((4, 4), bool), clear).scores()
    assert math.isnan(s["iou"]) and math.isnan(s["recall"]) and s["accuracy"] == 1 and s["specificity"] == 1
    s = confusion(np.ones((4, 4), bool), np.ones((4, 4), np.uint8)).scores()
    assert s["iou"] == 1 and s["precision"] == 1 and math.isnan(s["specificity"])


def test_pooled_versus_per_scene():
    ev = Evaluation()
    ev.add("a", np.array([1, 1, 1, 1], bool), np.array([1, 1, 1, 1], np.uint8))   # IoU 1
    ev.add("b", np.array([1, 0, 0, 0], bool), np.array([1, 1, 1, 1], np.uint8))   # IoU 0.25
    ev.add("c", np.array([0, 0], bool), np.array([0, 0], np.uint8))               # IoU undefined
    assert ev.pooled()["iou"] == pytest.approx(5 / 8)
    mean = ev.scene_mean()
    assert mean["iou"] == pytest.approx(0.625) and mean["iou_scenes"] == 2
    assert mean["accuracy"] == pytest.approx((1 + 0.25 + 1) / 3) and mean["accuracy_scenes"] == 3
    assert ev.report()["pixels"] == 10


def test_confusion_accumulates():
    total = Confusion()
    total += Confusion(1, 2, 3, 4)
    total += Confusion(1, 1, 1, 1)
    assert vars(total) == {"tp": 2, "fp": 3, "fn": 4, "tn": 5}


def test_calibration_on_a_hand_made_case():
    from scannernet_ros.metrics import Calibration
    cal = Calibration(bins=2)
    prob = np.array([[0.2, 0.2, 0.8, 0.8]])
    truth = np.array([[0, 1, 1, 1]], np.uint8)      # 0.2-bin: half cloud; 0.8-bin: all cloud
    cal.add(prob, truth)
    cal.add(np.array([[0.9]]), np.array([[255]], np.uint8))   # no data counts nowhere
    r = cal.report()
    assert r["pixels"] == 4
    assert r["ece"] == pytest.approx(0.5 * abs(0.2 - 0.5) + 0.5 * abs(0.8 - 1.0))
    assert r["brier"] == pytest.approx((0.04 + 0.64 + 0.04 + 0.04) / 4)
    assert [b["cloud_fraction"] for b in r["reliability"]] == [0.5, 1.0]


def test_cloud_cover_error_per_frame_on_a_hand_made_case():
    from scannernet_ros.metrics import FrameCover
    truth = np.zeros((6, 4), np.uint8)
    truth[:2] = 1                      # frame 1 (rows 0-2): 8 of 12 cloud; frame 2 (3-5): none
    truth[5, 0] = 255                  # no data, left out
    pred = np.zeros((6, 4), bool)
    pred[:3] = True                    # frame 1 predicted all cloud; frame 2 clear
    cover = FrameCover(frame_lines=3, discard_above=0.7)
    cover.add(pred, truth)
    r = cover.report()
    assert r["frames"] == 2
    assert r["cover_mae"] == pytest.approx((abs(1.0 - 8 / 12) + 0.0) / 2)
    assert r["discard_agreement"] == 0.5        # frame 1: discarded, though 67 % cloud is below 70 %


def test_evaluate_reports_the_per_frame_cover_error_and_calibration(tmp_path):
    import json

    from scannernet_ros.tools.cli import main
    assert main(["evaluate", "--models", "scannernet", "--data", "synthetic:2:48", "--frame-lines", "16",
                 "--panels", "0", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    for name in ("threshold", "scannernet"):          # the reference is always a row
        cover, cal = report["models"][name]["cover"], report["models"][name]["calibration"]
        assert cover["frames"] == 2 * 3 and 0 <= cover["cover_mae"] <= 1 and 0 <= cover["discard_agreement"] <= 1
        assert 0 <= cal["ece"] <= 1 and 0 <= cal["brier"] <= 1
    assert "cloud-cover error per frame" in (tmp_path / "evaluation.md").read_text()
