import numpy as np
import pytest

from conftest import BIOME, CLOUD38, needs_biome, needs_cloud38
from scannernet_ros.camera import encode_rows, scan
from scannernet_ros.codec import ENCODINGS, INPUT_ENCODINGS
from scannernet_ros.scenes import ArrayScene, open_scene
from scannernet_ros.scenes.cloud38 import DatasetError, find_split, parse_patch_name, read_patch, rebuild_scene
from scannernet_ros.scenes.synthetic import SyntheticScene

PATCH = "patch_192_10_by_12_LC08_L1TP_002053_20160520_20170324_01_T1"


def test_synthetic_scene_is_a_pure_function_of_seed_row_col():
    scene = SyntheticScene(96, 300, seed=4)
    whole, mask = scene.rows(0, 300)
    part, part_mask = scene.rows(131, 200)
    np.testing.assert_array_equal(whole[:, 131:200], part)
    np.testing.assert_array_equal(mask[131:200], part_mask)
    other, _ = SyntheticScene(96, 300, seed=5).rows(0, 300)
    assert not np.array_equal(whole, other)
    assert 0.05 < mask.mean() < 0.8 and set(np.unique(mask)) <= {0, 1}


def test_synthetic_any_width_and_length():
    rho, mask = SyntheticScene(7, 3).rows(0, 3)
    assert rho.shape == (4, 3, 7) and mask.shape == (3, 7)
    with pytest.raises(ValueError):
        SyntheticScene(0, 10)


@pytest.mark.parametrize("encoding", INPUT_ENCODINGS)
def test_camera_lines_in_every_encoding(encoding):
    dtype, bands = ENCODINGS[encoding]
    scene = SyntheticScene(20, 70)
    if "swir1" in bands:   # the synthetic scenes have R, G, B, NIR; a SWIR1 row is added for these
        rho, mask = scene.rows(0, 70)
        scene = ArrayScene("five bands", np.concatenate([rho, 0.3 * rho[:1]]), mask)
    lines = list(scan(scene, encoding))
    assert len(lines) == 70 and [line.index for line in lines] == list(range(70))
    assert lines[0].samples.shape == (len(bands), 20) and lines[0].samples.dtype == dtype


def test_camera_loops_with_increasing_index():
    lines = scan(SyntheticScene(8, 5), "rgb8", loop=True)
    assert [next(lines).index for _ in range(12)] == list(range(12))


@pytest.mark.parametrize("block", [1, 16, 64, 500])
def test_camera_lines_do_not_depend_on_the_read_block(block):
    """Paced and unpaced cameras read different blocks; the lines must be the same."""
    scene = SyntheticScene(24, 70, seed=2)
    reference = list(scan(scene, "16UC4", block=70))
    lines = list(scan(scene, "16UC4", block=block))
    assert [line.index for line in lines] == list(range(70))
    for a, b in zip(lines, reference):
        np.testing.assert_array_equal(a.samples, b.samples)
        np.testing.assert_array_equal(a.truth, b.truth)


def test_patch_names():
    p = parse_patch_name(f"red_{PATCH}.TIF")
    assert (p.number, p.row, p.col, p.scene) == (192, 10, 12, "LC08_L1TP_002053_20160520_20170324_01_T1")
    with pytest.raises(DatasetError):
        parse_patch_name("patch_x_by_y")


@needs_cloud38
def test_real_38cloud_patch():
    split = find_split(CLOUD38)
    assert split.patch_names() == [PATCH] and split.patch_names(nonempty_only=True) == [PATCH]
    rho, mask = read_patch(split, PATCH)
    assert rho.shape == (4, 384, 384) and mask.shape == (384, 384)
    assert abs(mask[mask != 255].mean() - 0.307) < 0.001  # NOTE.md: 30.7 % cloud
    assert 0.02 < rho.min() and rho.max() < 1.1
    # the uint16 camera encoding gives back the original digital numbers exactly
    import tifffile
    dn = tifffile.imread(split.band_path("nir", PATCH))
    np.testing.assert_array_equal(encode_rows(rho, "16UC4")[3], dn)


@needs_cloud38
def test_real_38cloud_scene_rebuild_places_patch_by_row_and_column():
    scene = rebuild_scene(find_split(CLOUD38), "LC08_L1TP_002053_20160520_20170324_01_T1")
    assert (scene.length, scene.width) == (10 * 384, 12 * 384)
    rho, mask = read_patch(find_split(CLOUD38), PATCH)
    np.testing.assert_array_equal(scene.reflectance[:, 9 * 384:, 11 * 384:], rho)
    assert (scene.mask[:9 * 384] == 255).all()


@needs_cloud38
def test_missing_band_file_is_named(tmp_path):
    import shutil
    root = tmp_path / "38-Cloud_training"
    shutil.copytree(CLOUD38 / "38-Cloud_training", root)
    missing = root / "train_green" / f"green_{PATCH}.TIF"
    missing.unlink()
    with pytest.raises(DatasetError, match=f"green_{PATCH}.TIF: missing file"):
        read_patch(find_split(root), PATCH)
    (root / "train_blue" / f"blue_{PATCH}.TIF").write_bytes(b"not a tiff")
    shutil.copy(root / "train_red" / f"red_{PATCH}.TIF", missing)
    with pytest.raises(DatasetError, match="unreadable TIFF"):
        read_patch(find_split(root), PATCH)


@needs_biome
def test_real_biome_patches():
    from scannernet_ros.learning.datasets import load_samples
    samples = load_samples(str(BIOME))
    assert len(samples) == 31
    for s in samples:
        assert s.reflectance.shape == (5, 256, 256)   # R, G, B, NIR, SWIR1
        assert set(np.unique(s.mask)) <= {0, 1, 255}
    scene = open_scene(str(BIOME / "train" / "Images" / "Barren_00_0214.tif"))
    assert scene.width == 256 and scene.has_truth


def test_image_file_sources(tmp_path):
    from PIL import Image
    rgb = (np.random.default_rng(0).random((10, 12, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "scene.png")
    Image.fromarray(((rgb[..., 0] > 128) * 255).astype(np.uint8)).save(tmp_path / "scene_mask.png")
    scene = open_scene(str(tmp_path / "scene.png"))
    assert (scene.length, scene.width) == (10, 12) and scene.has_truth
    np.testing.assert_allclose(scene.reflectance[0], rgb[..., 0] / 255, atol=1e-6)
    np.save(tmp_path / "cube.npy", np.random.default_rng(1).random((4, 8, 9)).astype(np.float32))
    assert open_scene(str(tmp_path / "cube.npy")).width == 9
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="bad.npy"):
        open_scene(str(tmp_path / "bad.npy"))


@needs_cloud38
def test_test_split_scene_takes_its_mask_from_entire_scene_gts(tmp_path):
    """A 38-Cloud_test layout built from the sample patch: the scene mask comes from Entire_scene_gts."""
    import shutil
    import tifffile
    scene_id = "LC08_L1TP_002053_20160520_20170324_01_T1"
    test = tmp_path / "38-Cloud_test"
    for band in ("red", "green", "blue", "nir"):
        (test / f"test_{band}").mkdir(parents=True)
        shutil.copy(CLOUD38 / "38-Cloud_training" / f"train_{band}" / f"{band}_{PATCH}.TIF",
                    test / f"test_{band}" / f"{band}_patch_1_1_by_1_{scene_id}.TIF")
    gt = tifffile.imread(CLOUD38 / "38-Cloud_training" / "train_gt" / f"gt_{PATCH}.TIF")
    (tmp_path / "Entire_scene_gts").mkdir()
    tifffile.imwrite(tmp_path / "Entire_scene_gts" / f"edited_corrected_gts_{scene_id}.TIF", gt[:300, :350])
    scene = rebuild_scene(find_split(test), scene_id)
    assert scene.mask.shape == (384, 384)
    np.testing.assert_array_equal(scene.mask[:300, :350], (gt[:300, :350] > 0).astype(np.uint8))
    assert (scene.mask[300:] == 255).all() and (scene.mask[:, 350:] == 255).all()
    _, patch_mask = read_patch(find_split(test), f"patch_1_1_by_1_{scene_id}")
    np.testing.assert_array_equal(patch_mask, scene.mask)  # per patch: its window of the scene mask


def test_plain_folder_of_images_with_masks(tmp_path):
    from scannernet_ros.learning.datasets import load_samples
    for i in range(2):
        np.save(tmp_path / f"img{i}.npy", np.random.default_rng(i).random((4, 6, 5)).astype(np.float32))
        np.save(tmp_path / f"img{i}.mask.npy", np.eye(6, 5, dtype=np.uint8))
    samples = load_samples(str(tmp_path))
    assert [s.name for s in samples] == ["img0", "img1"] and samples[0].mask.sum() == 5


def test_synthetic_source_cover_range_reaches_clear_and_overcast():
    from scannernet_ros.learning.datasets import load_all
    wide = [s.mask.mean() for s in load_all(["synthetic:40:64:0-1.6"])]
    assert min(wide) < 0.05 and max(wide) > 0.95
    default, explicit = load_all(["synthetic:3:64"]), load_all(["synthetic:3:64:0.15-0.65"])
    assert all(np.array_equal(a.reflectance, b.reflectance) for a, b in zip(default, explicit))
    thin = load_all(["synthetic:3:64:0.15-0.65:0.1"])  # thin cloud labelled too: more cloud, same image
    assert all(np.array_equal(a.reflectance, b.reflectance) and b.mask.sum() >= a.mask.sum() for a, b in zip(default, thin))
    assert sum(b.mask.sum() for b in thin) > sum(a.mask.sum() for a in default)
    with pytest.raises(DatasetError, match="LO-HI"):
        load_all(["synthetic:4:64:lots"])


def test_image_folder_masks_may_mark_no_data(tmp_path):
    import numpy as np

    from scannernet_ros.learning.datasets import load_samples
    image = np.full((8, 8, 3), 100, np.uint8)
    coded = np.zeros((8, 8), np.uint8)
    coded[:2], coded[2:4] = 1, 255                      # 0 clear, 1 cloud, 255 no data
    binary = np.zeros((8, 8), np.uint8)
    binary[:2] = 255                                    # a common 0/255 mask: 255 is cloud there
    for name, mask in (("coded", coded), ("binary", binary)):
        np.save(tmp_path / f"{name}.npy", image)
        np.save(tmp_path / f"{name}_mask.npy", mask)
    samples = {s.name: s.mask for s in load_samples(str(tmp_path))}
    assert (samples["coded"][:2] == 1).all() and (samples["coded"][2:4] == 255).all() and (samples["coded"][4:] == 0).all()
    assert (samples["binary"][:2] == 1).all() and (samples["binary"][2:] == 0).all()
