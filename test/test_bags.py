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


def test_foreign_type_on_a_known_topic_is_one_error_naming_bag_and_topic(tmp_path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from scannernet_ros.bags import SCANLINE, BagError, read_bag
    ts = get_typestore(Stores.ROS2_JAZZY)
    with Writer(tmp_path / "foreign", version=9) as writer:
        conn = writer.add_connection(SCANLINE, "std_msgs/msg/String", typestore=ts)
        writer.write(conn, 1, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"))
    with pytest.raises(BagError, match=f"foreign: topic {SCANLINE} has type std_msgs/msg/String"):
        list(read_bag(tmp_path / "foreign"))
    from scannernet_ros.tools.cli import main
    assert main(["evaluate", "--models", "scannernet_small", "--data", str(tmp_path / "foreign"),
                 "--out", str(tmp_path / "ev")]) == 2


def test_partial_staging_is_never_data_and_convert_cleans_it_on_request(tmp_path, capsys):
    from scannernet_ros.bags import BagError, find_bags
    from scannernet_ros.tools.cli import main
    from scannernet_ros.tools.convert import convert
    out = tmp_path / "bags"
    convert("synthetic:1:32", str(out))
    bag = next(out.iterdir())
    torn = out / f".{bag.name}.partial"
    bag.rename(torn)                     # what a kill -9 mid-write leaves
    assert find_bags(out) == []
    with pytest.raises(BagError, match="interrupted conversion"):
        find_bags(torn)
    assert main(["evaluate", "--data", str(torn), "--out", str(tmp_path / "ev")]) == 2
    assert main(["convert", "synthetic:1:32", str(out)]) == 2
    assert "--clean-partial" in capsys.readouterr().err
    assert main(["convert", "synthetic:1:32", str(out), "--clean-partial"]) == 0
    assert [p.name for p in out.iterdir()] == [bag.name]


def test_clean_partial_completes_an_interrupted_conversion_and_evaluate_names_what_it_cannot_read(tmp_path, capsys):
    from scannernet_ros.tools.cli import main
    from scannernet_ros.tools.convert import convert
    out = tmp_path / "bags"
    convert("synthetic:3:32", str(out))
    names = sorted(p.name for p in out.iterdir())
    last = out / names[-1]
    last.rename(out / f".{last.name}.partial")           # killed while writing the third bag
    assert main(["evaluate", "--models", "threshold", "--data", str(out), "--out", str(tmp_path / "ev")]) == 2
    assert "interrupted conversion" in capsys.readouterr().err  # not a silent score of 2 of 3 scenes
    assert main(["convert", "synthetic:3:32", str(out), "--clean-partial"]) == 0
    assert sorted(p.name for p in out.iterdir()) == names
    assert main(["evaluate", "--models", "threshold", "--data", str(out), "--out", str(tmp_path / "ev")]) == 0


def test_short_or_empty_replay_fails_with_its_reason():
    import numpy as np

    from scannernet_ros.replay_eval import StampPairing
    empty = StampPairing().report(expected_lines=0)
    assert empty["status"] == "FAIL" and "no line was scored" in empty["reasons"]
    pairing = StampPairing(max_pending=3)
    row = np.full(4, 255, np.uint8)
    for stamp in range(2):
        pairing.add_mask(stamp, row)
        pairing.add_truth(stamp, row)
    short = pairing.report(expected_lines=4)
    assert short["status"] == "FAIL" and "scored 2 of the 4 lines replayed" in short["reasons"]
    for stamp in range(10, 20):          # truth that never pairs: bounded, and counted as lost
        pairing.add_truth(stamp, row)
    assert len(pairing.truth) == 3 and pairing.report()["lost_masks"] == 10


def test_one_width_limit_for_camera_convert_and_evaluate(tmp_path):
    import numpy as np

    from scannernet_ros.bags import BagError, write_scene_bag
    from scannernet_ros.camera import scan
    from scannernet_ros.codec import MAX_WIDTH
    from scannernet_ros.scenes import ArrayScene
    wide = ArrayScene("wide", np.zeros((4, 1, MAX_WIDTH + 1), np.float32), np.zeros((1, MAX_WIDTH + 1), np.uint8))
    with pytest.raises(ValueError, match=f"1 to {MAX_WIDTH} px"):
        scan(wide, "16UC4")
    with pytest.raises(BagError, match=f"1 to {MAX_WIDTH} px"):
        write_scene_bag(tmp_path / "bag", wide)


def test_offline_reading_refuses_duplicate_and_unpaired_stamps(tmp_path):
    import numpy as np
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from scannernet_ros.bags import GT_LINE, IMAGE, SCANLINE, BagError, read_bag_scene
    from scannernet_ros.codec import encode_line
    ts = get_typestore(Stores.ROS2_JAZZY)
    Image, Header, Time = (ts.types[t] for t in (IMAGE, "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))

    def msg(stamp, samples, enc):
        step, data = encode_line(samples, enc)
        return ts.serialize_cdr(Image(header=Header(stamp=Time(sec=0, nanosec=stamp), frame_id="f"), height=1,
                                      width=samples.shape[-1], encoding=enc, is_bigendian=0, step=step,
                                      data=np.frombuffer(data, np.uint8)), IMAGE)

    def bag(name, scan_stamps, gt_stamps):
        with Writer(tmp_path / name, version=9) as w:
            sc, gt = w.add_connection(SCANLINE, IMAGE, typestore=ts), w.add_connection(GT_LINE, IMAGE, typestore=ts)
            for s in scan_stamps:
                w.write(sc, s, msg(s, np.full((4, 8), 9000, np.uint16), "16UC4"))
            for s in gt_stamps:
                w.write(gt, s, msg(s, np.zeros((1, 8), np.uint8), "mono8"))
        return tmp_path / name
    assert read_bag_scene(bag("ok", [1, 2, 3], [1, 2, 3])).mask.shape == (3, 8)
    with pytest.raises(BagError, match="share the stamp 5"):
        read_bag_scene(bag("dup", [5, 5, 6], [5, 6]))
    with pytest.raises(BagError, match="no scanline at their stamp"):
        read_bag_scene(bag("offby1", [10, 20], [11, 21]))
