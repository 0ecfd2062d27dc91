"""Skeletons declared once; YAML custom skeletons; joint mappings."""
import numpy as np
import pytest

from posekit.skeletons import get_skeleton, list_skeletons, load_skeleton_yaml, map_keypoints


def test_builtins():
    assert {"coco17", "openpose18", "mpii16", "h36m17", "h36m32", "stanford_extra24", "mafl5"} <= set(list_skeletons())
    sizes = {"coco17": 17, "openpose18": 18, "mpii16": 16, "h36m17": 17, "h36m32": 32, "stanford_extra24": 24,
             "mafl5": 5}
    for name, k in sizes.items():
        sk = get_skeleton(name)
        assert sk.num_keypoints == k
        perm = sk.flip_index
        assert np.array_equal(perm[perm], np.arange(k))  # a flip twice is the identity
    coco = get_skeleton("coco17")
    assert coco.keypoints[coco.flip_index[5]] == "right_shoulder"
    assert len(get_skeleton("openpose18").limbs) == 19  # the 19 PAF limbs / 38 channels


def test_mpii_flip_pairs_match_the_dataset_docs():
    assert get_skeleton("mpii16").flip_pairs == ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))


def test_yaml_skeleton_with_names(tmp_path):
    path = tmp_path / "hand.yaml"
    path.write_text("name: tri\nkeypoints: [a, b_left, b_right]\nflip_pairs: [[b_left, b_right]]\n"
                    "limbs: [[a, b_left], [a, 2]]\nsigmas: [0.1, 0.2, 0.2]\ncolors: ['#ff0000', '#00ff00', [0, 0, 255]]\n")
    sk = load_skeleton_yaml(path)
    assert sk.flip_pairs == ((1, 2),) and sk.limbs == ((0, 1), (0, 2))
    assert sk.keypoint_colors()[0].tolist() == [255, 0, 0]
    assert get_skeleton(str(path)).name == "tri"


@pytest.mark.parametrize("body,match", [
    ("name: x\nkeypoints: [a, b]\nflip_pairs: [[a, c]]\n", "unknown keypoint 'c'"),
    ("name: x\nkeypoints: [a, b]\nlimbs: [[0, 5]]\n", r"limbs entry \[0, 5\]: index 5 out of range"),
    ("name: x\nkeypoints: [a, b]\nsigmas: [0.1]\n", "'sigmas' must be a list of 2 numbers"),
    # found by the reliability pass (issue 12.12): each was accepted or gave a raw traceback
    ("name: x\nkeypoints: abc\n", "'keypoints' must be a non-empty list"),
    ("name: x\nkeypoints: [a, b, a]\n", r"'keypoints' lists \['a'\] more than once"),
    ("name: x\nkeypoints: [a, null]\n", "'keypoints' entries must be non-empty strings"),
    ("name: x\nkeypoints: [a, b]\nlimbs: [[0, -1]]\n", "index -1 out of range"),
    ("name: x\nkeypoints: [a, b]\nlimbs: [[0, 1.5]]\n", "neither a keypoint name nor an index"),
    ("name: x\nkeypoints: [a, b]\nlimbs: [[0, null]]\n", "neither a keypoint name nor an index"),
    ("name: x\nkeypoints: [a, b]\nlimbs: ab\n", "'limbs' must be a list of pairs"),
    ("name: x\nkeypoints: [a, b]\nlimbs: [[0, 1, 1]]\n", "each limbs entry must be a pair"),
    ("name: x\nkeypoints: [a, b, c]\nflip_pairs: [[a, b], [b, a]]\n", "'flip_pairs': keypoint 'a' appears in two"),
    ("name: x\nkeypoints: [a, b]\nflip_pairs: [[a, a]]\n", "pairs a keypoint with itself"),
    ("name: x\nkeypoints: [a, b]\nsigmas: [0.1, .nan]\n", "'sigmas' must be positive finite"),
    ("name: x\nkeypoints: [a, b]\nsigmas: [0.1, -1]\n", "'sigmas' must be positive finite"),
    ("name: x\nkeypoints: [a, b]\ncolors: ['#ff0000', '#zz']\n", "'colors'.*not a '#rrggbb'"),
    ("name: x\nkeypoints: [a, b]\ncolors: ['#ff0000']\n", "'colors' must be a list of 2"),
    ("name: x\nkeypoints: [a, b]\ncolors: ['#ff0000', [0, 0, 999]]\n", "'colors'.*0..255"),
    ("name: x\nkeypoints: [a, b\n", "not a readable YAML file"),
    ("- a\n- b\n", "must be a mapping"),
    ("name: [1]\nkeypoints: [a]\n", "'name' must be a non-empty string"),
    ("name: x\nkeypoints: [a, b]\nflip: [[0, 1]]\n", "unknown skeleton field"),
    ("keypoints: [a]\n", "needs a 'name'"),
])
def test_bad_yaml_names_the_file_and_field(tmp_path, body, match):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match=match) as e:
        load_skeleton_yaml(path)
    assert "bad.yaml" in str(e.value)


def test_missing_sigmas_is_an_error_not_one_over_k():
    with pytest.raises(ValueError, match="declares no OKS sigmas"):
        get_skeleton("mpii16").oks_sigmas()


def test_mappings():
    mpii = np.zeros((16, 3))
    mpii[:, 0] = np.arange(16)
    mpii[:, 2] = 1
    h36m = map_keypoints(mpii, "mpii16", "h36m17", has_visibility=True)
    assert h36m.shape == (17, 3)
    assert h36m[0, 0] == 6 and h36m[3, 0] == 0 and h36m[16, 0] == 10  # pelvis, r_ankle, r_wrist
    assert h36m[9].tolist() == [0, 0, 0]  # no MPII neck_base
    coco = np.zeros((17, 3))
    coco[5] = [10, 20, 2]
    coco[6] = [30, 40, 2]
    op = map_keypoints(coco, "coco17", "openpose18", has_visibility=True)
    assert op[1].tolist() == [20, 30, 2]  # neck = mid-shoulders
    coco[6, 2] = 0
    assert map_keypoints(coco, "coco17", "openpose18", has_visibility=True)[1, 2] == 0  # needs both shoulders
    original = np.random.rand(17, 3) + 0.5
    back = map_keypoints(map_keypoints(original, "coco17", "openpose18", has_visibility=True),
                         "openpose18", "coco17", has_visibility=True)
    assert np.array_equal(back, original)
    raw = np.random.rand(5, 32, 3)
    assert np.array_equal(map_keypoints(raw, "h36m32", "h36m17", has_visibility=False), raw[:, [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]])
    with pytest.raises(KeyError, match="no joint mapping"):
        map_keypoints(raw, "h36m32", "coco17", has_visibility=False)
