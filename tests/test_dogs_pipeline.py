"""Dog pipeline geometry: codec round trip, masked loss, flip swap, augmentation keeps keypoints
on the image content, decoding back to the original frame, PCK@bbox on hand-computed cases."""
import numpy as np
import pytest
import torch

from posekit.codecs.regression import RegressionCodec
from posekit.data.stanford_extra import Augmentation, DogPoseDataset, DogSample, StanfordExtraSource, load_stanford_extra
from posekit.data.transforms import affine_points
from posekit.families.dogs import DogsTask
from posekit.losses.dogs import KeypointMSELoss, keypoint_mse
from posekit.skeletons import get_skeleton


SK = get_skeleton("stanford_extra24")


def test_codec_round_trip_and_weights():
    codec = RegressionCodec((200, 100))
    kp = np.zeros((24, 3))
    kp[:, 0] = np.linspace(0, 200, 24)
    kp[:, 1] = np.linspace(0, 100, 24)
    kp[:20, 2] = 1
    kp[5] = [250.0, 50.0, 1.0]  # pushed outside by augmentation
    target, weight = codec.encode(kp)
    assert target.shape == (24, 2) and weight.shape == (24,)
    assert np.allclose(target[3], [kp[3, 0] / 200, kp[3, 1] / 100])
    assert np.allclose(codec.decode(target), kp[:, :2], atol=1e-4)
    assert torch.allclose(codec.decode(torch.from_numpy(target)), torch.from_numpy(kp[:, :2]).float(), atol=1e-3)
    assert weight[5] == 0 and weight[20:].sum() == 0 and weight[[0, 3, 19]].tolist() == [1, 1, 1]
    assert RegressionCodec((200, 100), mask_outside=False).encode(kp)[1][5] == 1
    assert RegressionCodec((200, 100), mask="none").encode(kp)[1].tolist() == [1.0] * 24
    with pytest.raises(ValueError, match="mask"):
        RegressionCodec(10, mask="all")


def test_masked_loss_ignores_unlabelled_joints():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[0.5, 0.5], [0.1, 0.2], [0.0, 0.0]]])
    weight = torch.tensor([[1.0, 1.0, 0.0]])
    # hand-computed: (0.25 + 0.25 + 0.01 + 0.04) / 4 coordinates
    assert float(keypoint_mse(pred, target, weight)) == pytest.approx(0.55 / 4)
    moved = pred.clone()
    moved[0, 2] = 0.9  # an unlabelled joint: no effect on the masked loss
    assert float(keypoint_mse(moved, target, weight)) == pytest.approx(0.55 / 4)
    # the faithful (unmasked) loss is the plain mean over every coordinate
    assert float(KeypointMSELoss(masked=False)(moved, target, weight)) == pytest.approx((0.55 + 0.81 * 2) / 6)
    zero = keypoint_mse(pred.requires_grad_(), target, torch.zeros(1, 3))
    assert float(zero.detach()) == 0 and zero.requires_grad


class DotSource:
    """One dark image with a green dot at joint 0 (the only labelled joint)."""

    def __init__(self, xy=(60.0, 40.0), size=(160, 100)):
        w, h = size
        self.image = np.zeros((h, w, 3), np.uint8)
        yy, xx = np.mgrid[0:h, 0:w]
        self.image[(xx - xy[0]) ** 2 + (yy - xy[1]) ** 2 <= 25] = (0, 255, 0)
        self.kp = np.zeros((24, 3))
        self.kp[0] = [xy[0], xy[1], 1.0]

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return DogSample(self.image.copy(), self.kp.copy(), np.array([30.0, 20.0, 80.0, 60.0]))


def _bright_centroid(image_chw):
    img = image_chw.float().numpy()
    green = img[1] - (img[0] + img[2]) / 2  # the grey border padding is not green
    ys, xs = np.nonzero(green > 0.2 * green.max())
    w = green[ys, xs]
    return np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])


@pytest.mark.parametrize("crop", ["image", "bbox", "resize"])
def test_augmentation_keeps_keypoints_on_the_image_content(crop):
    ds = DogPoseDataset(DotSource(), input_size=64, crop=crop, augment=True,
                        augmentation=Augmentation(flip_prob=0.5, rotation=40, scale_range=(0.7, 1.3),
                                                  translate=0.1, color_jitter=0.0))
    torch.manual_seed(0)
    flips = 0
    for _ in range(12):
        item = ds[0]
        labelled = np.flatnonzero(item["keypoints_input"][:, 2].numpy() > 0)
        assert len(labelled) == 1
        j = int(labelled[0])
        flips += j == 6  # joint 0 (left front paw) becomes right front paw after a mirror
        assert j in (0, 6)
        dot = _bright_centroid(item["image"])
        assert np.linalg.norm(dot - item["keypoints_input"][j, :2].numpy()) < 1.0
        # and the stored inverse matrix maps it back onto the original dot
        back = affine_points(item["keypoints_input"][j:j + 1, :2].numpy(), item["inv_matrix"].numpy())
        assert np.allclose(back, [[60.0, 40.0]], atol=1e-6)
    assert 0 < flips < 12


def test_flip_swaps_left_and_right():
    src = DotSource()
    src.kp[6] = [100.0, 70.0, 1.0]  # right front paw, no dot needed
    plain = DogPoseDataset(src, input_size=64, augment=False)[0]
    aug = Augmentation(flip_prob=1.0, rotation=0, scale_range=(1, 1), translate=0, color_jitter=0)
    flipped = DogPoseDataset(src, input_size=64, augment=True, augmentation=aug)[0]
    a, b = plain["keypoints_input"].numpy(), flipped["keypoints_input"].numpy()
    for left, right in SK.flip_pairs:
        assert np.allclose(b[right, :2], [64 - a[left, 0], a[left, 1]])
        assert np.allclose(b[left, :2], [64 - a[right, 0], a[right, 1]])
    # the faithful (reference) pipeline mirrors WITHOUT swapping labels
    torch.manual_seed(1)
    faithful = DogPoseDataset(src, input_size=64, augment=True, faithful=True)
    mirrored = 0
    for _ in range(20):
        item = faithful[0]
        k = item["keypoints_input"].numpy()
        assert k[0, 2] == 1 and k[6, 2] == 1  # labels stay put
        mirrored += _bright_centroid(item["image"])[0] > 32
    assert 0 < mirrored < 20


def test_faithful_pipeline_stretches_and_does_not_mask():
    src = DotSource(size=(160, 100))
    item = DogPoseDataset(src, input_size=64, faithful=True, augment=False)[0]
    assert np.allclose(item["keypoints_input"][0, :2].numpy(), [60 * 64 / 160, 40 * 64 / 100])
    assert item["target_weight"].tolist() == [1.0] * 24
    assert np.allclose(item["target"][5].numpy(), [0, 0])  # unlabelled (0, 0) trains as (0, 0)
    default = DogPoseDataset(src, input_size=64, augment=False)[0]
    assert default["target_weight"].sum() == 1


def test_bbox_crop_geometry():
    src = DotSource()
    item = DogPoseDataset(src, input_size=64, crop="bbox", bbox_margin=0.25, augment=False)[0]
    # box [30, 20, 80, 60]: centre (70, 50), side 80 * 1.5 = 120 -> input 64
    m = item["matrix"].numpy()
    assert np.allclose(affine_points(np.array([[70.0, 50.0]]), m), [[32, 32]])
    assert np.allclose(affine_points(np.array([[10.0, 50.0]]), m), [[0, 32]])


@pytest.fixture(scope="module")
def real_dataset(realdata):
    root = realdata / "stanford_extra"
    if not (root / "StanfordExtra_sample.json").is_file():
        pytest.skip("StanfordExtra samples absent")
    records = load_stanford_extra(root / "StanfordExtra_sample.json", root / "sample_imgs")
    return DogPoseDataset(StanfordExtraSource(records, root / "sample_imgs"), input_size=96, augment=False)


def test_decode_maps_back_to_the_original_frame(real_dataset):
    """Perfect normalised outputs decode to the annotated pixels of the original image."""
    for i in (0, 7, 17):
        item = real_dataset[i]
        w = item["target_weight"].numpy() > 0
        pix = RegressionCodec((96, 96)).decode(item["target"].numpy().astype(np.float64))
        orig = affine_points(pix, item["inv_matrix"].numpy())
        gt = item["keypoints"].numpy()
        assert w.sum() == (gt[:, 2] > 0).sum()
        assert np.allclose(orig[w], gt[w, :2], atol=1e-3)  # float32 targets: ~1e-4 px
        # the letterbox kept the aspect ratio: one scale for x and y
        m = item["matrix"].numpy()
        assert np.isclose(abs(m[0, 0]), abs(m[1, 1])) and m[0, 1] == 0


def test_pck_and_pixel_error_hand_computed():
    gt = np.zeros((2, 24, 3))
    gt[:, :2, 2] = 1  # two labelled joints per dog
    gt[0, 0, :2] = [10, 10]
    gt[0, 1, :2] = [50, 50]
    gt[1, 0, :2] = [0, 0]
    gt[1, 1, :2] = [20, 20]
    pred = gt[..., :2].copy()
    pred[0, 0] += [3, 4]  # 5 px off; threshold 0.1 * 100 = 10 -> correct
    pred[0, 1] += [12, 0]  # 12 px -> wrong
    pred[1, 0] += [0, 4]  # threshold 0.1 * 30 = 3 -> wrong
    pred[:, 5] = [999, 999]  # unlabelled joints never count
    bbox = np.array([[0, 0, 100, 40], [0, 0, 10, 30]], float)
    m = DogsTask.metrics(pred, gt, bbox, threshold=0.1)
    assert m["pck"] == pytest.approx(2 / 4)
    assert m["mean_px_error"] == pytest.approx((5 + 12 + 4 + 0) / 4)
    assert m["pck/left_front_paw"] == pytest.approx(0.5)
    assert m["pck/left_front_middle"] == pytest.approx(0.5)
    assert m["px_error/left_front_paw"] == pytest.approx(4.5)
    assert "pck/right_front_paw" not in m  # never labelled: no per-joint entry
    assert m["num_joints"] == 4
