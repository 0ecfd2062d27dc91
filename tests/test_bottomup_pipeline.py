"""Bottom-up (OpenPose) pipeline: one matrix per item, flip swap, mask weight, dropping, eval letterbox, speed."""
import time

import cv2
import numpy as np
import pytest
import torch

from posekit.data.bottomup import BottomUpDataset
from posekit.data.formats.coco import coco17_to_openpose18, load_coco_keypoints
from posekit.data.io import read_image
from posekit.data.sample import Sample
from posekit.data.synthetic.multiperson import SyntheticMultiPerson
from posekit.data.transforms import affine_points, crop_affine, swap_left_right, warp_image
from posekit.skeletons import get_skeleton

# pycocotools 2.0.x calls np.array(copy=False) on decode; harmless under numpy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

OP18 = get_skeleton("openpose18")
R_ARM, L_ARM = OP18.limbs.index((2, 3)), OP18.limbs.index((5, 6))


class FakeCodec:
    """Same interface as PAFCodec: a 1 in the cell under each labelled part; at a limb's midpoint
    cell its unit vector."""

    def __init__(self, input_size=(64, 64), stride=8):
        self.input_size, self.stride = input_size, stride

    def encode(self, kp):
        s = self.stride
        w, h = self.input_size[0] // s, self.input_size[1] // s
        heat = np.zeros((19, h, w), np.float32)
        paf = np.zeros((38, h, w), np.float32)
        for person in kp:
            for j, (x, y, v) in enumerate(person):
                cx, cy = int(x // s), int(y // s)
                if v > 0 and 0 <= cx < w and 0 <= cy < h:
                    heat[j, cy, cx] = 1.0
            for i, (a, b) in enumerate(OP18.limbs):
                if person[a, 2] > 0 and person[b, 2] > 0:
                    d = person[b, :2] - person[a, :2]
                    mid = (person[a, :2] + person[b, :2]) / 2
                    cx, cy = int(mid[0] // s), int(mid[1] // s)
                    if np.hypot(*d) > 0 and 0 <= cx < w and 0 <= cy < h:
                        paf[2 * i:2 * i + 2, cy, cx] = d / np.hypot(*d)
        heat[18] = 1 - heat[:18].max(0)
        return heat, paf


class NullCodec:
    def __init__(self, input_size=(368, 368), stride=8):
        self.input_size, self.stride = input_size, stride

    def encode(self, kp):
        w, h = self.input_size[0] // self.stride, self.input_size[1] // self.stride
        return np.zeros((19, h, w), np.float32), np.zeros((38, h, w), np.float32)


def _expected_cells(sample, matrix, stride=8, size=(64, 64)):
    kp = affine_points(coco17_to_openpose18(sample.keypoints), matrix)
    if np.linalg.det(matrix[:, :2]) < 0:  # mirrored
        kp = swap_left_right(kp, OP18)
    cells = set()
    for person in kp:
        for j, (x, y, v) in enumerate(person):
            cx, cy = int(x // stride), int(y // stride)
            if v > 0 and 0 <= cx < size[0] // stride and 0 <= cy < size[1] // stride:
                cells.add((j, cy, cx))
    return cells


def _cells(heat):
    return {tuple(int(v) for v in c) for c in np.argwhere(heat[:18] > 0)}


@pytest.fixture(scope="module")
def synth():
    return SyntheticMultiPerson(12, seed=0, image_size=(160, 120))


def test_eval_schema_letterbox_and_determinism(synth):
    ds = BottomUpDataset(synth, FakeCodec(), train=False)
    assert len(ds) == 12 and ds.dropped == []
    item = ds[3]
    assert set(item) == {"image", "heatmaps", "pafs", "weight", "matrix", "index"}
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 64, 64)
    assert item["heatmaps"].dtype == torch.float32 and item["heatmaps"].shape == (19, 8, 8)
    assert item["pafs"].shape == (38, 8, 8) and item["weight"].shape == (1, 8, 8)
    assert item["matrix"].dtype == torch.float64 and item["index"] == 3
    s = 64 / 160
    t = 0.5 * s - 0.5  # pixel centres at integers: x -> (x + 0.5) * s - 0.5
    np.testing.assert_allclose(item["matrix"].numpy(), [[s, 0, t], [0, s, t]])
    img = item["image"].numpy()
    assert np.all(img[:, 49:, :] == 128)  # 120 * 0.4 = 48 rows of image, grey below
    assert _cells(item["heatmaps"].numpy()) == _expected_cells(synth[3], item["matrix"].numpy())
    again = ds[3]
    for k in ("image", "heatmaps", "pafs", "weight", "matrix"):
        assert torch.equal(item[k], again[k])


def test_train_items_follow_one_matrix(synth):
    ds = BottomUpDataset(synth, FakeCodec(), train=True, hsv_prob=0.0)
    torch.manual_seed(0)
    flips = 0
    for i in range(len(ds)):
        item = ds[i]
        m = item["matrix"].numpy()
        sample = ds.sample(i)
        # the image is the original warped once with the returned matrix
        expected = warp_image(sample.image, m, (64, 64), border_value=(127.5,) * 3)
        np.testing.assert_array_equal(item["image"].numpy().transpose(1, 2, 0), expected)
        # and the targets come from the keypoints moved by the same matrix (left/right swapped if mirrored)
        assert _cells(item["heatmaps"].numpy()) == _expected_cells(sample, m)
        flips += np.linalg.det(m[:, :2]) < 0
    assert 0 < flips < len(ds)


def test_train_rng_comes_from_torch(synth):
    ds = BottomUpDataset(synth, FakeCodec(), train=True)
    torch.manual_seed(5)
    a = ds[2]
    torch.manual_seed(5)
    b = ds[2]
    torch.manual_seed(6)
    c = ds[2]
    assert torch.equal(a["matrix"], b["matrix"]) and torch.equal(a["image"], b["image"])
    assert not torch.equal(a["matrix"], c["matrix"])
    state = np.random.get_state()[1].copy()
    ds[1]
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global numpy RNG untouched


def _arm_sample():
    kp = np.zeros((1, 17, 3))
    kp[0, 6] = (20, 30, 2)  # right shoulder
    kp[0, 8] = (10, 30, 2)  # right elbow: the right arm points to image left
    kp[0, 5] = (40, 30, 2)  # left shoulder
    kp[0, 7] = (40, 50, 2)  # left elbow: the left arm points down
    image = np.full((64, 64, 3), 90, np.uint8)
    return Sample(keypoints=kp, image=image, boxes=[[0, 0, 64, 64]])


def _real_paf_codec():
    paf = pytest.importorskip("posekit.codecs.paf")
    return paf.PAFCodec(input_size=(64, 64))


@pytest.mark.parametrize("codec_factory", [FakeCodec, _real_paf_codec], ids=["fake", "PAFCodec"])
def test_flip_swaps_parts_so_pafs_point_the_right_way(codec_factory):
    codec = codec_factory()
    common = {"train": True, "rotation_sigma": 0.0, "center_jitter": 0.0, "hsv_prob": 0.0,
              "scale_limits": (1.0, 1.0), "drop_unusable": False}
    plain = BottomUpDataset([_arm_sample()], codec, flip_prob=0.0, **common)[0]["pafs"].numpy()
    flipped = BottomUpDataset([_arm_sample()], codec, flip_prob=1.0, **common)[0]["pafs"].numpy()
    # unflipped: right arm points -x, left arm +y
    assert plain[2 * R_ARM].sum() < 0 and abs(plain[2 * R_ARM + 1]).sum() < 1e-6
    assert plain[2 * L_ARM + 1].sum() > 0
    # mirrored: the person's right arm is the old left one (pointing down), the left arm points +x
    assert abs(flipped[2 * R_ARM]).sum() < 1e-6 and flipped[2 * R_ARM + 1].sum() > 0
    assert flipped[2 * L_ARM].sum() > 0 and abs(flipped[2 * L_ARM + 1]).sum() < 1e-6


def test_ignore_mask_weight_warped_and_dilated():
    mask = np.zeros((100, 100), np.uint8)
    mask[20:80, 20:80] = 1  # input px 12.8 .. 51.2 at scale 0.64: cells 2..5 fully covered
    s = Sample(keypoints=np.zeros((0, 17, 3)), image=np.zeros((100, 100, 3), np.uint8), ignore_mask=mask)
    w = BottomUpDataset([s], FakeCodec(), train=False, mask_dilation=1)[0]["weight"][0].numpy()
    assert np.all(w[2:6, 2:6] == 0)
    assert np.all(w[0] == 1) and np.all(w[:, 7] == 1) and 0 < w[1, 3] < 1
    wd = BottomUpDataset([s], FakeCodec(), train=False)[0]["weight"][0].numpy()  # 16 px dilation
    assert (wd < 1).sum() > (w < 1).sum() and wd[0, 3] < 1 and wd[7, 3] < 1
    assert np.all(wd <= w + 1e-6)


def test_synthetic_crowd_lowers_the_weight():
    src = SyntheticMultiPerson(4, seed=1, crowd_prob=1.0, small_prob=0.0)
    ds = BottomUpDataset(src, FakeCodec(input_size=(128, 128)), train=False)
    for i in range(len(ds)):
        assert (ds[i]["weight"] < 1).any()


def test_drop_unusable_images():
    big = np.zeros((1, 17, 3))
    big[0, :, :2] = np.random.default_rng(0).uniform(10, 90, size=(17, 2))
    big[0, :, 2] = 2
    tiny = big.copy()
    tiny[0, :, :2] = 50 + tiny[0, :, :2] / 20
    img = np.zeros((100, 100, 3), np.uint8)
    src = [Sample(keypoints=big, image=img, boxes=[[10, 10, 80, 80]]),
           Sample(keypoints=tiny, image=img, boxes=[[50, 50, 4, 4]]),
           Sample(keypoints=np.zeros((0, 17, 3)), image=img)]
    train = BottomUpDataset(src, FakeCodec(), train=True)
    assert len(train) == 1 and train.dropped == [1, 2] and train[0]["index"] == 0
    assert len(BottomUpDataset(src, FakeCodec(), train=False)) == 3
    assert len(BottomUpDataset(src, FakeCodec(), train=True, drop_unusable=False)) == 3
    assert len(BottomUpDataset(src, FakeCodec(), train=True, mask_min_area=10_000)) == 0


@pytest.mark.parametrize("diag, lo, hi", [(20.0, 1.0, 2.0), (1000.0, 0.5, 1.0), (200.0, 0.5, 2.0), (400.0, 0.5, 1.28)])
def test_person_size_aware_scale(diag, lo, hi):
    side = diag / np.sqrt(2)
    kp = np.zeros((1, 17, 3))
    kp[0, :, :2] = np.linspace(0, side, 17)[:, None]
    kp[0, :, 2] = 2
    s = Sample(keypoints=kp, image=np.zeros((8, 8, 3), np.uint8), boxes=[[0, 0, side, side]],
               meta={"areas": [side * side]})
    ds = BottomUpDataset([s], FakeCodec(), train=True)
    rng = np.random.default_rng(0)
    scales = np.array([np.sqrt(abs(np.linalg.det(ds.train_matrix(s, 8, 8, rng)[0][:, :2]))) for _ in range(300)])
    assert scales.min() >= lo - 1e-9 and scales.max() <= hi + 1e-9
    assert scales.min() < lo + 0.1 * (hi - lo) and scales.max() > hi - 0.1 * (hi - lo)


def test_hsv_hue_wraps_and_grey_stays_grey():
    class Fixed:
        def __init__(self, values):
            self.values = list(values)

        def integers(self, lo, hi):
            return self.values.pop(0)

    hsv = np.zeros((1, 2, 3), np.uint8)
    hsv[0, 0] = (175, 255, 255)
    hsv[0, 1] = (0, 0, 128)  # grey
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    ds = BottomUpDataset([], FakeCodec(), train=True)
    out = cv2.cvtColor(ds._hsv(rgb, Fixed([10, 0, 0])), cv2.COLOR_RGB2HSV)
    assert abs(int(out[0, 0, 0]) - 5) <= 1  # 175 + 10 wraps to 5 (the reference clips to 179+)
    assert out[0, 1, 1] == 0
    out = ds._hsv(rgb, Fixed([0, 0, -30]))
    assert np.all(out[0, 1] == out[0, 1, 0]) and abs(int(out[0, 1, 0]) - 98) <= 1


# --- real COCO ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def coco(realdata):
    d = realdata / "coco"
    if not (d / "test_coco.json").is_file():
        pytest.skip("COCO sample absent")
    return load_coco_keypoints(d / "test_coco.json", d / "images")


def test_real_coco_with_real_codec(coco):
    paf = pytest.importorskip("posekit.codecs.paf")
    codec = paf.PAFCodec(input_size=(368, 368))
    ev = BottomUpDataset(coco, codec, train=False)
    assert len(ev) == 4
    item = ev[1]  # image 40083: one unlabelled background person -> masked
    assert item["heatmaps"].shape == (19, 46, 46) and item["pafs"].shape == (38, 46, 46)
    assert (item["weight"] < 1).any() and (item["weight"] == 1).float().mean() > 0.9
    kp = affine_points(coco17_to_openpose18(coco[1].keypoints), item["matrix"].numpy())
    heat = item["heatmaps"].numpy()
    for j in range(18):
        for x, y, v in kp[:, j]:
            if v > 0:
                cx, cy = int(round((x - 3.5) / 8)), int(round((y - 3.5) / 8))
                assert heat[j, cy, cx] > 0.5  # a Gaussian of sigma 7 px peaks in the cell under the part
    train = BottomUpDataset(coco, codec, train=True)
    assert len(train) == 4 and train.dropped == []
    torch.manual_seed(0)
    batch = torch.utils.data.default_collate([train[0], train[1]])
    assert batch["image"].shape == (2, 3, 368, 368) and batch["weight"].shape == (2, 1, 46, 46)


def test_speed_vs_floor(coco):
    """JPEG decode + one warpAffine is the floor; the pipeline (null codec) should stay near it."""
    m = crop_affine((320, 200), 300, (368, 368), rotation=10)

    def floor(i):
        warp_image(read_image(coco[i].image_path), m, (368, 368), border_value=(127.5,) * 3)

    ds = BottomUpDataset(coco, NullCodec(), train=True)

    def timed(fn, n=40):
        fn(0)
        t = time.perf_counter()
        for i in range(n):
            fn(i % 4)
        return (time.perf_counter() - t) / n * 1e3

    torch.manual_seed(0)
    f = min(timed(floor), timed(floor))
    p = min(timed(ds.__getitem__), timed(ds.__getitem__))
    print(f"bottom-up item {p:.2f} ms vs floor {f:.2f} ms: ratio {p / f:.2f}")
    assert p / f < 3.0
