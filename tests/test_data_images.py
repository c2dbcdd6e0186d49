"""Image files decode to what an image viewer shows, for every mode cameras, phones and scanners write.

Each test builds its file in tmp_path and checks pixel values, not just that the file loads.
"""

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from mobilezoo.data import (
    BACKGROUND,
    DECODE_ERRORS,
    ImageFolderSafe,
    build_transforms,
    default_normalization,
    image_mode,
    load_image,
    load_split,
)


def px(img):
    return np.asarray(img).astype(int)


def write_png16(path, arr):
    """A 16-bit PNG written by hand (Pillow writes 16-bit grayscale, but not 16-bit RGB/RGBA or gray+alpha)."""
    h, w = arr.shape[:2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[1 if arr.ndim == 2 else arr.shape[2]]  # gray, gray+alpha, RGB, RGBA
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def test_issue_example_12_bit_values_in_a_16_bit_png_are_not_white(tmp_path):
    arr = (np.random.default_rng(0).random((64, 64)) * 4095).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "scan.png")
    with pytest.warns(UserWarning, match="12-bit data in a 16-bit file"):
        img = load_image(tmp_path / "scan.png")
    assert img.mode == "RGB" and img.size == (64, 64)
    got = px(img)
    assert (got == 255).mean() == 0  # the old loader clipped 93.5% of these pixels to white
    expected = np.rint(arr / 257.0).astype(int)  # value * 255 / 65535: dark, as a viewer shows it
    assert np.array_equal(got[..., 0], expected) and np.array_equal(got[..., 1], expected)
    with pytest.warns(UserWarning):
        assert np.array_equal(px(load_image(tmp_path / "scan.png", "L")), expected)


@pytest.mark.parametrize(("mode", "ext"), [("I;16", "png"), ("I;16", "tif"), ("I;16B", "tif")])
def test_16_bit_grayscale_is_scaled_by_65535(tmp_path, mode, ext):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    dtype = ">u2" if mode == "I;16B" else "<u2"
    Image.frombytes(mode, (4, 1), values.astype(dtype).tobytes()).save(tmp_path / f"g.{ext}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full-range data: no low-bits warning
        assert px(load_image(tmp_path / f"g.{ext}", "L")).tolist() == [[0, 1, 128, 255]]
        assert px(load_image(tmp_path / f"g.{ext}"))[0].tolist() == [[v] * 3 for v in (0, 1, 128, 255)]


def test_32_bit_integer_and_float_grayscale(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535]], np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    assert px(load_image(tmp_path / "i.tif", "L")).tolist() == [[0, 128, 255]]
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match=r"big.tif.*values in \[0, 70000\].*0\.\.65535"):
        load_image(tmp_path / "big.tif")

    Image.fromarray(np.array([[0.0, 0.25, 1.0]], np.float32)).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert px(load_image(tmp_path / "f.tif", "L")).tolist() == [[0, 64, 255]]  # 0 = black, 1 = white
    Image.fromarray(np.array([[0.0, 4095.0]], np.float32)).save(tmp_path / "raw.tif")
    with pytest.raises(ValueError, match=r"raw.tif.*\[0, 4095\].*rescale it to \[0, 1\]"):
        load_image(tmp_path / "raw.tif")
    Image.fromarray(np.array([[0.0, np.nan]], np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match="non-finite"):
        load_image(tmp_path / "nan.tif")


def test_16_bit_color_png_and_tiff_keep_their_colors(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32768, 4095
    got = px(load_image(write_png16(tmp_path / "rgb16.png", rgb)))
    np.testing.assert_allclose(got, np.broadcast_to([255, 128, 16], got.shape), atol=1)
    rgba = np.zeros((1, 2, 4), np.uint16)
    rgba[0, 0] = (65535, 0, 0, 65535)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent black: the background shows
    assert px(load_image(write_png16(tmp_path / "rgba16.png", rgba))).tolist() == [[[255, 0, 0], [255, 255, 255]]]
    la = np.array([[[32768, 65535], [0, 0]]], np.uint16)  # 16-bit gray + alpha: opaque mid-gray, transparent black
    assert px(load_image(write_png16(tmp_path / "la16.png", la), "L")).tolist() == [[128, 255]]


def test_low_bit_modes_and_palettes(tmp_path):
    one = Image.new("1", (2, 1))
    one.putpixel((1, 0), 1)
    one.save(tmp_path / "bw.png")
    assert px(load_image(tmp_path / "bw.png", "L")).tolist() == [[0, 255]]

    Image.fromarray(np.array([[0, 77, 255]], np.uint8)).save(tmp_path / "l.png")
    assert px(load_image(tmp_path / "l.png")).tolist() == [[[0] * 3, [77] * 3, [255] * 3]]

    pal = Image.new("P", (2, 1))
    pal.putpalette([200, 10, 20, 5, 6, 7] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png")
    assert px(load_image(tmp_path / "p.png")).tolist() == [[[200, 10, 20], [5, 6, 7]]]
    pal.save(tmp_path / "pt.png", transparency=0)  # palette index 0 is see-through
    assert px(load_image(tmp_path / "pt.png")).tolist() == [[[BACKGROUND] * 3, [5, 6, 7]]]
    pal.save(tmp_path / "pt.gif", transparency=0)
    assert px(load_image(tmp_path / "pt.gif")).tolist() == [[[BACKGROUND] * 3, [5, 6, 7]]]


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 0], [0, 0, 0, 128]]], np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    got = px(load_image(tmp_path / "rgba.png"))
    assert got[0, :2].tolist() == [[255, 0, 0], [255, 255, 255]]
    np.testing.assert_allclose(got[0, 2], [127, 127, 127], atol=1)  # half-transparent black over white
    assert px(load_image(tmp_path / "rgba.png", "L"))[0, :2].tolist() == [76, 255]  # ITU-R 601 luma of red

    Image.fromarray(np.array([[[10, 255], [90, 0], [10, 200]]], np.uint8), "LA").save(tmp_path / "la.png")
    assert px(load_image(tmp_path / "la.png", "L")).tolist() == [[10, 255, 63]]  # 10 * 200/255 + 255 * 55/255
    Image.fromarray(np.array([[50, 60]], np.uint8)).save(tmp_path / "trns.png", transparency=50)  # PNG tRNS gray
    assert px(load_image(tmp_path / "trns.png", "L")).tolist() == [[255, 60]]
    Image.new("RGB", (2, 1), (1, 2, 3)).save(tmp_path / "trns_rgb.png", transparency=(1, 2, 3))
    assert px(load_image(tmp_path / "trns_rgb.png")).tolist() == [[[255] * 3] * 2]
    with pytest.warns(UserWarning):
        Image.fromarray(np.array([[9, 4000]], np.uint16)).save(tmp_path / "trns16.png", transparency=9)
        assert px(load_image(tmp_path / "trns16.png", "L")).tolist() == [[255, 16]]


def test_cmyk_and_ycbcr(tmp_path):
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "cyan.jpg", quality=95)  # Adobe CMYK JPEG
    assert Image.open(tmp_path / "cyan.jpg").mode == "CMYK"
    np.testing.assert_allclose(px(load_image(tmp_path / "cyan.jpg"))[8, 8], [0, 255, 255], atol=3)
    Image.new("CMYK", (2, 2), (0, 0, 0, 0)).save(tmp_path / "white.tif")
    assert px(load_image(tmp_path / "white.tif"))[0, 0].tolist() == [255, 255, 255]
    Image.new("RGB", (4, 4), (200, 30, 60)).convert("YCbCr").save(tmp_path / "ycc.tif")
    assert Image.open(tmp_path / "ycc.tif").mode == "YCbCr"
    np.testing.assert_allclose(px(load_image(tmp_path / "ycc.tif"))[0, 0], [200, 30, 60], atol=2)


@pytest.mark.parametrize("ext", ["jpg", "png", "tif"])
def test_exif_orientation_is_applied(tmp_path, ext):
    # stored 8 wide x 4 high, left half black, right half white; orientation 6 = "rotate 90 degrees clockwise to view"
    stored = np.zeros((4, 8), np.uint8)
    stored[:, 4:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / f"o.{ext}", exif=exif)
    img = load_image(tmp_path / f"o.{ext}", "L")
    assert img.size == (4, 8)  # viewed: 4 wide, 8 high
    got = px(img)
    assert got[:3].max() < 30 and got[5:].min() > 225  # the left (black) half is now on top


def test_multi_frame_files_give_their_first_frame(tmp_path):
    frames = [Image.new("L", (4, 4), v) for v in (10, 200, 90)]
    for name in ("anim.gif", "pages.tif", "anim.png"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
        assert px(load_image(tmp_path / name, "L")).tolist() == [[10] * 4] * 4, name


def test_undecodable_and_bad_mode(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(DECODE_ERRORS):
        load_image(tmp_path / "x.png")
    Image.new("L", (2, 2)).save(tmp_path / "ok.png")
    with pytest.raises(ValueError, match="'RGBA'"):
        load_image(tmp_path / "ok.png", "RGBA")
    with pytest.raises(ValueError, match="in_chans=4"):
        image_mode(4)


def _folder_pair(tmp_path, write):
    """Two ImageFolder trees: the test's files (``write(path, arr)``) and their 8-bit viewer equivalents."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for c in ("a", "b"):
            for i in range(2):
                arr = (rng.random((40, 48)) * 65535).astype(np.uint16)
                for root, fn in (("hi", write), ("lo", _write_8bit)):
                    d = tmp_path / root / split / c
                    d.mkdir(parents=True, exist_ok=True)
                    fn(d / f"{i}", arr)
    return tmp_path / "hi", tmp_path / "lo"


def _write_8bit(stem, arr):
    Image.fromarray(np.rint(arr / 257.0).astype(np.uint8)).save(stem.with_suffix(".png"))


def _write_16bit(stem, arr):
    Image.fromarray(arr).save(stem.with_suffix(".png"))


def test_folders_read_16_bit_files_as_their_8_bit_equivalents(tmp_path):
    hi, lo = _folder_pair(tmp_path, _write_16bit)
    for in_chans in (1, 3):
        tf = build_transforms(False, 32, default_normalization(in_chans, False))
        a, b = load_split(hi, "val", tf, in_chans), load_split(lo, "val", tf, in_chans)
        for i in range(len(a)):
            assert a[i][0].equal(b[i][0]) and a[i][1] == b[i][1]


def test_folders_read_gif_files_and_report_heic_ones(tmp_path):
    for c, v in (("a", 30), ("b", 220)):
        (tmp_path / c).mkdir()
        Image.new("L", (8, 8), v).save(tmp_path / c / "x.gif")  # torchvision's ImageFolder ignored .gif files
    (tmp_path / "b" / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    ds = ImageFolderSafe(tmp_path, None, mode="L")
    assert len(ds) == 3 and px(ds[0][0]).max() == 30
    with pytest.warns(UserWarning, match="IMG_0001.HEIC.*HEIC/HEIF needs a Pillow plugin"):
        assert ds[1] is None
