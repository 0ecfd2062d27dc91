"""CelebA / MAFL / MTFL readers and the unlabelled image-folder reader."""
import numpy as np
import pytest

from posekit.data.formats.celeba import (FormatError, read_celeba_landmarks, read_image_folder, read_mafl,
                                         read_mtfl, read_mtfl_list, read_name_list)
from posekit.data.io import write_image

HEADER = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"


@pytest.fixture
def celeba(realdata):
    root = realdata / "celeba_mafl"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    return root


@pytest.fixture
def mtfl(realdata):
    root = realdata / "mtfl"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    return root


# -- real samples ----------------------------------------------------------------------------------
def test_real_celeba_excerpt(celeba):
    table = read_celeba_landmarks(celeba / "list_landmarks_align_celeba_excerpt.txt")
    assert list(table) == [f"{i:06d}.jpg" for i in range(1, 9)]
    assert np.array_equal(table["000003.jpg"], [[76, 112], [104, 106], [108, 128], [74, 156], [98, 158]])


def test_real_mafl_splits_and_samples(celeba):
    train = read_name_list(celeba / "MAFL" / "training.txt")
    test = read_name_list(celeba / "MAFL" / "testing.txt")
    assert (len(train), len(test)) == (19000, 1000)
    assert not set(train) & set(test)
    assert test[-1] == "144790.jpg"  # the last line has no newline
    samples = read_mafl(celeba, "train", missing="skip")
    assert [s.meta["image_id"] for s in samples] == ["000003.jpg"]  # the only train image in the excerpt
    s = samples[0].load()
    assert s.image.shape == (218, 178, 3) and s.keypoints.shape == (1, 5, 3)
    assert (s.keypoints[..., 2] == 2).all() and s.meta["split"] == "train"
    kp = s.keypoints[0]
    assert kp[0, 0] < kp[1, 0] and kp[3, 0] < kp[4, 0]  # "left" = image-left
    assert read_mafl(celeba, "test", missing="skip") == []
    with pytest.raises(KeyError, match="missing='skip'"):
        read_mafl(celeba, "train")


def test_real_mtfl(mtfl):
    train, test = read_mtfl(mtfl, "train"), read_mtfl(mtfl, "test")
    assert len(train) == len(test) == 20
    first = train[0]
    assert first.meta["image_id"] == "lfw_5590/Aaron_Eckhart_0001.jpg"  # backslash path normalised
    assert np.allclose(first.keypoints[0, :, :2], [[107.25, 108.75], [147.75, 113.25], [126.25, 143.75],
                                                   [106.25, 158.75], [140.75, 162.75]])  # x's then y's
    assert (first.meta["gender"], first.meta["smile"], first.meta["glasses"], first.meta["head_pose"]) == (1, 2, 2, 3)
    for s in train + test:
        assert s.image_path.is_file(), s.image_path
    img = test[0].load().image
    assert img.shape[:2] == (150, 150)
    assert all(0 <= s.keypoints[0, :, 0].min() and s.keypoints[0, :, 0].max() < 400 for s in train + test)


def test_real_image_folder(celeba):
    samples = read_image_folder(celeba / "img_align_celeba")
    assert len(samples) == 6 and samples[0].meta["image_id"] == "000003.jpg"
    assert samples[0].keypoints.shape == (1, 0, 3)
    assert samples[0].load().image.shape == (218, 178, 3)


# -- written files ---------------------------------------------------------------------------------
def test_landmark_file_variations(tmp_path):
    reordered = HEADER.split()
    reordered = reordered[2:4] + reordered[:2] + reordered[4:]  # righteye first
    path = tmp_path / "lm.txt"
    path.write_text("\r\n".join(["2", "\t".join(reordered), "a.jpg\t3  4   1 2 5 6 7 8 9 10", "",
                                 "  b.jpg 1 2 3 4 5 6 7 8 9 10  "]))
    table = read_celeba_landmarks(path)
    assert np.array_equal(table["a.jpg"][:2], [[1, 2], [3, 4]])  # columns matched by name
    assert np.array_equal(table["b.jpg"][2], [5, 6]) and np.array_equal(table["b.jpg"][:2], [[3, 4], [1, 2]])
    no_count = tmp_path / "nocount.txt"
    no_count.write_text(f"{HEADER}\nc.jpg 1 2 3 4 5 6 7 8 9 10")
    assert list(read_celeba_landmarks(no_count)) == ["c.jpg"]


@pytest.mark.parametrize("body, match", [
    (f"3\n{HEADER}\na.jpg 1 2 3 4 5 6 7 8 9 10\n", "count line says 3"),
    (f"1\n{HEADER}\na.jpg 1 2 3 4 5 6 7 8 9\n", r"lm\.txt:3: expected an image name and 10"),
    (f"1\n{HEADER}\na.jpg 1 2 3 4 5 x 7 8 9 10\n", r":3: non-numeric"),
    ("1\nfoo bar\na.jpg 1 2 3 4 5 6 7 8 9 10\n", r":2: header"),
    (f"1\n{HEADER}\n../a.jpg 1 2 3 4 5 6 7 8 9 10\n", "leaves the dataset root"),
    (f"2\n{HEADER}\na.jpg 1 2 3 4 5 6 7 8 9 10\na.jpg 1 2 3 4 5 6 7 8 9 10\n", ":4: image a.jpg is listed twice"),
])
def test_landmark_file_errors_name_file_and_line(tmp_path, body, match):
    path = tmp_path / "lm.txt"
    path.write_text(body)
    with pytest.raises(FormatError, match=match):
        read_celeba_landmarks(path)


def test_truncated_file_with_strict_count_off(tmp_path):
    path = tmp_path / "lm.txt"
    path.write_text(f"202599\n{HEADER}\na.jpg 1 2 3 4 5 6 7 8 9 10")
    assert len(read_celeba_landmarks(path, strict_count=False)) == 1


def test_mafl_layout_in_tmp(tmp_path):
    (tmp_path / "MAFL").mkdir()
    (tmp_path / "MAFL" / "training.txt").write_text("a.jpg\nb.jpg")
    (tmp_path / "MAFL" / "testing.txt").write_text("c.jpg\n")
    (tmp_path / "list_landmarks_align_celeba.txt").write_text(
        f"3\n{HEADER}\na.jpg 1 2 3 4 5 6 7 8 9 10\nb.jpg 1 2 3 4 5 6 7 8 9 10\nc.jpg 2 2 3 4 5 6 7 8 9 10\n")
    train = read_mafl(tmp_path, "train")
    assert [s.meta["image_id"] for s in train] == ["a.jpg", "b.jpg"]
    assert train[0].image_path == tmp_path / "img_align_celeba" / "a.jpg"
    assert read_mafl(tmp_path, "test")[0].keypoints[0, 0, 0] == 2
    with pytest.raises(ValueError, match="split"):
        read_mafl(tmp_path, "val")
    (tmp_path / "MAFL" / "training.txt").write_text("a.jpg\n/etc/passwd")
    with pytest.raises(FormatError, match="training.txt:2"):
        read_mafl(tmp_path, "train")


def test_mtfl_lines_in_tmp(tmp_path):
    path = tmp_path / "training.txt"
    path.write_bytes(b"sub\\x.jpg 1 2 3 4 5 6 7 8 9 10 2 1 2 5\r\n y.jpg 1 2 3 4 5 6 7 8 9 10\r\n")
    samples = read_mtfl_list(path)
    assert samples[0].image_path == tmp_path / "sub" / "x.jpg"
    assert np.array_equal(samples[0].keypoints[0, :, :2], [[1, 6], [2, 7], [3, 8], [4, 9], [5, 10]])
    assert samples[0].meta["head_pose"] == 5 and "gender" not in samples[1].meta
    path.write_text(" ..\\..\\x.jpg 1 2 3 4 5 6 7 8 9 10 1 1 1 1\n")
    with pytest.raises(FormatError, match="leaves the dataset root"):
        read_mtfl_list(path)
    path.write_text("x.jpg 1 2 3 4 5 6 7 8 9 10 1 1\n")
    with pytest.raises(FormatError, match="training.txt:1: expected a path"):
        read_mtfl_list(path)


def test_image_folder_in_tmp(tmp_path):
    img = np.zeros((8, 6, 3), np.uint8)
    write_image(tmp_path / "b.png", img)
    write_image(tmp_path / "sub" / "a.jpg", img)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [s.meta["image_id"] for s in read_image_folder(tmp_path)] == ["b.png", "sub/a.jpg"]
    assert [s.meta["image_id"] for s in read_image_folder(tmp_path, recursive=False)] == ["b.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        read_image_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_image_folder(tmp_path / "missing")
