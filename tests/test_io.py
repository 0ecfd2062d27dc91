"""read_image decodes like a photo viewer (EXIF, depth, colour layouts) and refuses bad files
with one line naming them; iter_sources can report a bad file and go on."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from posekit.data.io import image_size_from_header, iter_sources, read_image
from posekit.data.sample import BadRecordError


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width, height, color_type, rows: bytes, extra: bytes = b"", bit_depth=8) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


def _exif_app1(orientation: int) -> bytes:
    """A minimal APP1 segment: a big-endian TIFF header with one IFD entry, Orientation (0x0112)."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) \
        + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _jpeg(image_rgb: np.ndarray, quality=95) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _marked(h=40, w=60) -> np.ndarray:
    """Black image with a red block in the stored top-left corner."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:10, :10] = (255, 0, 0)
    return img


def _red_centre(img):
    ys, xs = np.nonzero((img[..., 0] > 200) & (img[..., 2] < 60))
    return float(ys.mean()), float(xs.mean())


def test_16bit_png_is_scaled_to_8bit(tmp_path):
    img = np.zeros((8, 8, 3), np.uint16)
    img[0, 0] = 65535
    img[0, 1] = 32896  # 128 * 257
    cv2.imwrite(str(tmp_path / "deep.png"), img)
    out = read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [128, 128, 128]
    assert out[1, 1].tolist() == [0, 0, 0]


def test_float_tiff_in_unit_range_is_scaled(tmp_path):
    img = np.zeros((6, 7, 3), np.float32)
    img[..., 2] = 1.0  # BGR on disk: red = 1.0
    img[0, 0] = (0.5, 0.5, 0.5)
    assert cv2.imwrite(str(tmp_path / "f.tif"), img)
    out = read_image(tmp_path / "f.tif")
    assert out.dtype == np.uint8
    assert out[3, 3].tolist() == [255, 0, 0]
    assert out[0, 0].tolist() == [128, 128, 128]
    grey = np.full((5, 4), 0.25, np.float32)  # single-channel float: cv2's IMREAD_COLOR refuses it
    assert cv2.imwrite(str(tmp_path / "g.tif"), grey)
    assert read_image(tmp_path / "g.tif")[0, 0].tolist() == [64, 64, 64]


@pytest.mark.parametrize("orientation,shape,centre", [
    (1, (40, 60, 3), (4.5, 4.5)),   # as stored
    (3, (40, 60, 3), (35.5, 55.5)),  # rotated 180
    (6, (60, 40, 3), (4.5, 35.5)),  # rotate 90 CW to view: stored top-left lands top-right
    (8, (60, 40, 3), (55.5, 4.5)),  # rotate 90 CCW to view: lands bottom-left
])
def test_exif_orientation_applied(tmp_path, orientation, shape, centre):
    data = _jpeg(_marked())
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(data[:2] + _exif_app1(orientation) + data[2:])
    out = read_image(path)
    assert out.shape == shape
    assert _red_centre(out) == pytest.approx(centre, abs=1.0)
    half = read_image(path, reduction=2)  # the reduced decode is oriented the same way
    assert half.shape == (shape[0] // 2, shape[1] // 2, 3)  # even sizes: ceil = floor
    assert _red_centre(half) == pytest.approx((centre[0] / 2 - 0.25, centre[1] / 2 - 0.25), abs=1.0)


def test_grey_rgba_and_palette_become_rgb(tmp_path):
    grey = np.full((5, 6), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert read_image(tmp_path / "g.png")[0, 0].tolist() == [77, 77, 77]
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0] = 200  # blue channel (BGRA on disk)
    rgba[..., 3] = 128
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    out = read_image(tmp_path / "a.png")
    assert out.shape == (5, 6, 3) and out[0, 0].tolist() == [0, 0, 200]
    palette = bytes([10, 20, 30, 250, 240, 230])
    rows = b"".join(b"\x00" + bytes([0, 1, 1]) for _ in range(2))  # 3x2 indexed, filter 0
    (tmp_path / "p.png").write_bytes(_png(3, 2, 3, rows, _png_chunk(b"PLTE", palette)))
    out = read_image(tmp_path / "p.png")
    assert out[0].tolist() == [[10, 20, 30], [250, 240, 230], [250, 240, 230]]


def test_truncated_jpeg_is_a_bad_record(tmp_path):
    rng = np.random.default_rng(0)
    data = _jpeg(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * 0.7)])
    assert cv2.imread(str(path)) is not None  # cv2 alone decodes it silently
    with pytest.raises(BadRecordError, match="cut.jpg") as e:
        read_image(path)
    assert "truncated" in str(e.value)
    (tmp_path / "padded.jpg").write_bytes(data + b"\x00" * 16)  # padding after EOI is fine
    assert read_image(tmp_path / "padded.jpg").shape == (64, 64, 3)
    exif_cut = data[:2] + _exif_app1(1) + data[2:]
    (tmp_path / "exif_cut.jpg").write_bytes(exif_cut[:-40])
    with pytest.raises(BadRecordError, match="truncated"):
        read_image(tmp_path / "exif_cut.jpg")


def test_truncated_png_is_a_bad_record(tmp_path):
    cv2.imwrite(str(tmp_path / "ok.png"), np.full((20, 20, 3), 9, np.uint8))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:-12])  # IDAT complete, IEND gone
    with pytest.raises(BadRecordError, match="cut.png.*|.*IEND"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "cut2.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadRecordError, match="cut2.png"):
        read_image(tmp_path / "cut2.png")


def test_empty_undecodable_and_missing(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(BadRecordError, match="zero.jpg.*|0 bytes"):
        read_image(tmp_path / "zero.jpg")
    (tmp_path / "text.png").write_text("not an image at all")
    with pytest.raises(BadRecordError, match="text.png"):
        read_image(tmp_path / "text.png")
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ValueError, match="reduction"):
        read_image(tmp_path / "zero.jpg", reduction=3)


def test_huge_header_refused_before_decoding(tmp_path, monkeypatch):
    # a 40k x 40k PNG whose IDAT holds one row: the header alone must refuse it
    (tmp_path / "bomb.png").write_bytes(_png(40000, 40000, 0, b"\x00" + bytes(40000)))
    with pytest.raises(BadRecordError, match=r"bomb.png is 40000x40000 .*limit"):
        read_image(tmp_path / "bomb.png")
    data = bytearray(_jpeg(_marked()))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 50000, 50000)  # height, width in the frame header
    (tmp_path / "bomb.jpg").write_bytes(bytes(data))
    with pytest.raises(BadRecordError, match=r"50000x50000"):
        read_image(tmp_path / "bomb.jpg")
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(BadRecordError, match="limit of 99"):
        read_image(tmp_path / "small.png", max_pixels=99)
    monkeypatch.setenv("POSEKIT_MAX_IMAGE_PIXELS", "50")
    with pytest.raises(BadRecordError, match="limit of 50"):
        read_image(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png", max_pixels=0).shape == (10, 10, 3)  # 0 = no limit
    monkeypatch.setenv("POSEKIT_MAX_IMAGE_PIXELS", "many")
    with pytest.raises(ValueError, match="POSEKIT_MAX_IMAGE_PIXELS"):
        read_image(tmp_path / "small.png")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tif"])
def test_header_size_probe_matches_decoder(tmp_path, ext):
    img = np.random.default_rng(1).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / f"x{ext}"
    assert cv2.imwrite(str(path), img)
    assert image_size_from_header(path.read_bytes()) == (53, 37)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_reduction_decodes_smaller_with_exact_block_geometry(tmp_path, ext):
    """ceil(H/r) x ceil(W/r) for every format, reduced pixel u covering original [r*u, r*u + r):
    a bright 8x8 block at rows 8-15, columns 16-23 lands on reduced pixel (8/r.., 16/r..)."""
    img = np.full((37, 53, 3), 40, np.uint8)
    img[8:16, 16:24] = 220
    path = tmp_path / f"r{ext}"
    if ext == ".jpg":
        path.write_bytes(_jpeg(img, quality=98))
    else:
        cv2.imwrite(str(path), img)
    full = read_image(path)
    for r in (2, 4, 8):
        small = read_image(path, reduction=r)
        assert small.shape == (-(-37 // r), -(-53 // r), 3) and small.dtype == np.uint8
        bright = small[..., 0] > 130
        ys, xs = np.nonzero(bright)
        assert (ys.min(), ys.max(), xs.min(), xs.max()) == (8 // r, 15 // r, 16 // r, 23 // r)
        if ext == ".png":  # exact r x r block means
            pad = np.pad(full.astype(float), ((0, -37 % r), (0, -53 % r), (0, 0)), mode="edge")
            blocks = pad.reshape(pad.shape[0] // r, r, pad.shape[1] // r, r, 3).mean(axis=(1, 3))
            assert np.abs(small - blocks).max() <= 1.0


def test_iter_sources_reports_bad_files_and_goes_on(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((4, 4, 3), np.uint8))
    (folder / "b.jpg").write_bytes(b"")
    cv2.imwrite(str(folder / "c.png"), np.zeros((5, 5, 3), np.uint8))
    errors = []
    names = [n for n, _ in iter_sources([folder, tmp_path / "missing.jpg"], on_error=lambda n, m: errors.append((n, m)))]
    assert [n.split("/")[-1] for n in names] == ["a.png", "c.png"]
    assert [e[0].split("/")[-1] for e in errors] == ["b.jpg", "missing.jpg"]
    assert "0 bytes" in errors[0][1] and "missing.jpg" in errors[1][1]
    with pytest.raises(BadRecordError, match="b.jpg"):
        list(iter_sources([folder]))  # without on_error: the old behaviour, an error
