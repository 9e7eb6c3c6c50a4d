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
