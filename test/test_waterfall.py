import numpy as np

from scannernet_ros.waterfall import Waterfall


def test_rolling_picture_keeps_the_last_rows_and_tints_masked_pixels():
    w = Waterfall(rows=3)
    for stamp in range(5):
        w.add_line(stamp, np.full((4, 3), stamp * 10, np.uint8))
    image = w.image()
    assert image.shape == (3, 4, 3) and list(image[:, 0, 0]) == [20, 30, 40]  # newest at the bottom
    assert not w.add_mask(0, np.ones(4, bool))  # scrolled out
    assert w.add_mask(4, np.array([1, 0, 0, 1], bool))
    row = w.image()[-1]
    assert row[0, 0] > row[0, 1] and (row[1] == 40).all()  # magenta tint on cloud pixels only


def test_width_change_starts_a_new_picture():
    w = Waterfall(rows=5)
    w.add_line(0, np.zeros((4, 3), np.uint8))
    w.add_line(1, np.zeros((6, 3), np.uint8))
    assert w.image().shape == (1, 6, 3)
    assert Waterfall(2).image() is None
