import numpy as np
import pytest

from conftest import CLOUD38, needs_cloud38
from scannernet_ros.bags import GT_LINE, SCANLINE, BagError, read_bag, read_bag_scene, write_scene_bag
from scannernet_ros.scenes.synthetic import SyntheticScene


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("encoding", ["16UC4", "rgb16"])
def test_round_trip_identical_lines_and_stamps(tmp_path, storage, encoding):
    scene = SyntheticScene(40, 90, seed=2)
    bag = tmp_path / "scene"
    assert write_scene_bag(bag, scene, encoding=encoding, storage=storage) == 90
    msgs = list(read_bag(bag))
    scan = [m for m in msgs if m.topic == SCANLINE]
    gt = [m for m in msgs if m.topic == GT_LINE]
    assert len(scan) == len(gt) == 90
    stamps = [m.msg.header.stamp.sec * 10**9 + m.msg.header.stamp.nanosec for m in scan]
    assert np.all(np.diff(stamps) == 4_444_444) and [m.timestamp for m in scan] == stamps
    assert {m.msg.encoding for m in scan} == {encoding} and {m.msg.height for m in scan} == {1}
    rebuilt = read_bag_scene(bag)
    rho, mask = scene.rows(0, 90)
    bands = 4 if encoding == "16UC4" else 3
    np.testing.assert_allclose(rebuilt.reflectance[:bands], rho[:bands], atol=1.01e-5)
    np.testing.assert_array_equal(rebuilt.mask, mask)
    assert rebuilt.name == scene.name


def test_metadata_is_what_ros2_bag_info_reads(tmp_path):
    import yaml
    write_scene_bag(tmp_path / "b", SyntheticScene(8, 10))
    info = yaml.safe_load((tmp_path / "b" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["storage_identifier"] == "mcap" and info["message_count"] == 21
    topics = {t["topic_metadata"]["name"]: t["message_count"] for t in info["topics_with_message_count"]}
    assert topics == {"/pushbroom/scanline": 10, "/pushbroom/gt_line": 10, "/pushbroom/scene": 1}


def test_refuses_to_overwrite(tmp_path):
    write_scene_bag(tmp_path / "b", SyntheticScene(8, 4))
    with pytest.raises(BagError, match="refusing to overwrite"):
        write_scene_bag(tmp_path / "b", SyntheticScene(8, 4))


def test_truncated_and_foreign_bags(tmp_path):
    write_scene_bag(tmp_path / "b", SyntheticScene(16, 300))
    data = next((tmp_path / "b").glob("*.mcap"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(BagError, match="unreadable bag"):
        read_bag_scene(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metadata.yaml").write_text("not: a bag")
    with pytest.raises(BagError, match="c"):
        list(read_bag(tmp_path / "c"))
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS2_JAZZY)
    with Writer(tmp_path / "foreign", version=9) as w:
        conn = w.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        w.write(conn, 1, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String"))
    with pytest.raises(BagError, match="not a scannernet_ros scene bag"):
        list(read_bag(tmp_path / "foreign"))


@needs_cloud38
def test_38cloud_patch_to_bag_keeps_digital_numbers(tmp_path):
    import tifffile
    from scannernet_ros.codec import decode_line
    from scannernet_ros.scenes import open_scene
    patch = next((CLOUD38 / "38-Cloud_training" / "train_red").glob("*.TIF"))
    write_scene_bag(tmp_path / "p", open_scene(str(patch)))
    first = next(m for m in read_bag(tmp_path / "p") if m.topic == SCANLINE)
    np.testing.assert_array_equal(decode_line(first.msg).samples[0], tifffile.imread(patch)[0])
