"""Synthetic cartoon faces: determinism, landmark order, landmarks on the drawn features, speed."""
import time

import numpy as np

from posekit.data.synthetic.deformable import PART_IDS, SyntheticFaces
from posekit.skeletons import get_skeleton


def test_deterministic_per_index_and_seed():
    a, b = SyntheticFaces(10, seed=3), SyntheticFaces(10, seed=3)
    late = b[7]
    _ = b[2]
    first = a[7]
    assert np.array_equal(first.image, late.image) and np.array_equal(first.keypoints, late.keypoints)
    assert not np.array_equal(a[6].image, first.image)
    assert not np.array_equal(SyntheticFaces(10, seed=4)[7].keypoints, first.keypoints)
    assert first.image.shape == (128, 128, 3) and first.image.dtype == np.uint8
    assert first.keypoints.shape == (1, 5, 3) and (first.keypoints[..., 2] == 2).all()
    assert "parts" not in first.meta and len(a) == 10
    assert np.array_equal(a[-1].image, a[9].image)


def test_landmarks_sit_on_their_features_in_mafl5_order():
    assert get_skeleton("mafl5").keypoints == ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
    expected = [PART_IDS["iris"], PART_IDS["iris"], PART_IDS["nose"], PART_IDS["mouth_corner"],
                PART_IDS["mouth_corner"]]
    faces = SyntheticFaces(60, seed=0, with_parts=True, image_size=96)
    for i in range(len(faces)):
        s = faces[i]
        kp = s.keypoints[0, :, :2]
        assert (kp >= 0).all() and (kp <= 95).all()
        cols, rows = np.round(kp).astype(int).T
        assert list(s.meta["parts"][rows, cols]) == expected, i
        assert kp[0, 0] < kp[1, 0] and kp[3, 0] < kp[4, 0]  # image-left first
        assert kp[0, 1] < kp[2, 1] < kp[3, 1]  # eyes above the nose above the mouth (rotation <= 0.35 rad)
        # one iris colour per face: both landmark pixels show it (no anti-aliased edge under a centre)
        img = s.image.astype(int)
        assert np.abs(img[rows[0], cols[0]] - img[rows[1], cols[1]]).max() <= 2


def test_faces_vary_and_are_fast():
    faces = SyntheticFaces(200, seed=1)
    t = time.perf_counter()
    samples = [faces[i] for i in range(200)]
    per_image = (time.perf_counter() - t) / 200
    assert per_image < 0.005, f"{per_image * 1e3:.2f} ms per image"
    kps = np.stack([s.keypoints[0, :, :2] for s in samples])
    eye_dist = np.linalg.norm(kps[:, 0] - kps[:, 1], axis=-1)
    assert eye_dist.std() > 1.0 and 15 < eye_dist.mean() < 45  # scale varies, faces stay face-sized
    assert kps[:, 2, 0].std() > 3  # positions vary
