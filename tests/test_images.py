"""Reading uploads: every odd format a person may send becomes RGB uint8, or a clear ImageError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from explainer import ImageError, load_image
from explainer.inputs.images import display_name, load_image_with_notes


@pytest.fixture
def picture() -> np.ndarray:
    grid = np.zeros((30, 40, 3), np.uint8)
    grid[:10, :20] = (255, 0, 0)  # a red block in the upper left: shows orientation
    grid[20:, 30:] = (0, 0, 255)
    return grid


def save(img: Image.Image, path, **kwargs):
    img.save(path, **kwargs)
    return path


def test_formats_become_rgb_uint8(tmp_path, picture):
    rgb = Image.fromarray(picture)
    cases = {
        "rgb.png": rgb,
        "grey.png": rgb.convert("L"),
        "rgba.png": rgb.convert("RGBA"),
        "palette.png": rgb.convert("P"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "grey16.png": Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257),
    }
    for name, img in cases.items():
        array = load_image(save(img, tmp_path / name))
        assert array.dtype == np.uint8 and array.shape == (30, 40, 3), name
        assert array[5, 5].argmax() == 0 or name.startswith("grey"), name  # red stays red
        assert array[5, 5].max() > 60, name  # 16-bit data scaled down, not clipped to black


def test_transparent_pixels_become_white(tmp_path, picture):
    rgba = np.dstack([picture, np.zeros((30, 40), np.uint8)])
    array = load_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "clear.png"))
    assert (array == 255).all()


def test_exif_rotation_is_applied(tmp_path, picture):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = save(Image.fromarray(picture), tmp_path / "phone.jpg", exif=exif, quality=95)
    array = load_image(path)
    assert array.shape == (40, 30, 3)
    assert array[5, -5].argmax() == 0  # the red block is now in the upper right


def test_animated_gif_first_frame(tmp_path, picture):
    frames = [Image.fromarray(picture), Image.fromarray(255 - picture)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert load_image(path)[5, 5].argmax() == 0


def test_arrays_of_every_kind(picture):
    assert load_image(picture) is picture or np.array_equal(load_image(picture), picture)
    assert load_image(picture[..., 0]).shape == (30, 40, 3)
    assert load_image(picture.astype(np.float32) / 255).max() == 255
    assert load_image(Image.fromarray(picture)).shape == (30, 40, 3)
    with pytest.raises(ImageError):
        load_image(np.zeros((4, 4, 5)))
    with pytest.raises(ImageError):
        load_image(42)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty"),
    (b"hello, this is text", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        load_image(path)


def test_truncated_file(tmp_path, picture):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8)).save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="No image file"):
        load_image(tmp_path / "nowhere.png")


def test_huge_image_and_decompression_bomb_refused_without_decoding(tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(huge)  # 400 megapixels, a few kilobytes on disk
    assert huge.stat().st_size < 200_000
    with pytest.raises(ImageError, match=r"too large|megapixels"):
        load_image(huge)
    wide = tmp_path / "wide.png"
    Image.new("1", (9000, 5000)).save(wide)  # 45 MP: under Pillow's bomb limit, over ours
    with pytest.raises(ImageError, match="megapixels"):
        load_image(wide)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_grey_uses_its_own_range(tmp_path, suffix):
    # An X-ray-like 16-bit image using 1000-3000 of 0-65535: divided by 65535 it would be black (0-11).
    ramp = np.tile(np.linspace(1000, 3000, 64).astype(np.uint16), (16, 1))
    path = tmp_path / f"xray{suffix}"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")  # really stored as 16-bit
    grey = load_image(path)[..., 0]
    assert grey.min() == 0 and grey.max() == 255
    assert (np.diff(grey[0].astype(int)) >= 0).all() and len(np.unique(grey)) == 64
    assert abs(int(grey[0, 32]) - 129) <= 2  # linear: the middle of the range is mid-grey


def test_sixteen_bit_constant_image_keeps_its_level(tmp_path):
    path = tmp_path / "white16.png"
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(path)
    assert (load_image(path) == 255).all()


def test_integer_arrays(picture):
    assert np.array_equal(load_image(picture.astype(np.int64)), picture)  # 0-255 in a wide type: as is
    signed = np.array([[-1000, 0], [1000, 3000]], np.int16)  # outside 0-255: stretched over its own range
    assert load_image(signed)[..., 0].tolist() == [[0, 64], [128, 255]]


def test_notes_and_names(tmp_path, picture):
    path = save(Image.fromarray(picture), tmp_path / "photo.png")
    loaded = load_image_with_notes(path)
    assert np.array_equal(loaded.pixels, load_image(path))
    assert loaded.notes == [] and loaded.name == "photo.png" and not loaded.dicom
    assert display_name(path) == "photo.png" and display_name(tmp_path / "Doe_Jane.dcm") == "the DICOM file"
    assert load_image_with_notes(picture).name == ""


# --- the pixel budget: counted from headers, before decoding ------------------------------------------------------


def test_a_huge_palette_png_is_refused_from_its_header_in_milliseconds(tmp_path):
    from test_budget import peak_rss_growth

    from explainer.inputs.images import pixel_budget

    path = tmp_path / "layer.png"
    painted = Image.new("P", (12000, 12000), 0)
    painted.putpalette([0, 0, 0, 255, 0, 255] + [0] * 762)
    painted.paste(1, (4000, 4000, 6000, 6000))
    painted.save(path, transparency=0, optimize=True)
    assert path.stat().st_size < 400_000  # decoded as RGBA it would take 576 MB
    with pixel_budget(100_000_000):
        def read():
            with pytest.raises(ImageError, match=r"12000×12000 pixels; the limit is 40 megapixels per image"):
                load_image(path)
        _none, growth = peak_rss_growth(read)
    assert growth < 100 * 2**20, f"grew by {growth / 2**20:.0f} MB"


def test_one_request_decodes_at_most_its_budget_in_all(tmp_path):
    from explainer.inputs.images import pixel_budget

    paths = [save(Image.new("RGB", (1000, 1000)), tmp_path / f"{i}.png") for i in range(3)]
    with pixel_budget(2_500_000) as budget:
        load_image(paths[0])
        load_image(paths[1])
        assert budget.spent == 2_000_000
        with pytest.raises(ImageError, match=r"would decode 3\.0 megapixels; this server decodes at most 2\.5"):
            load_image(paths[2])
        assert budget.spent == 2_000_000  # a refused image costs nothing
    load_image(paths[2])  # outside a request's budget only the per-image limit applies
    with pixel_budget(None, per_image=500_000), pytest.raises(ImageError, match=r"limit is 0\.5 megapixels"):
        load_image(paths[0])


def test_in_memory_images_keep_the_per_image_limit():
    from explainer.inputs.images import pixel_budget

    with pixel_budget(None, per_image=100), pytest.raises(ImageError, match="limit is"):
        load_image(np.zeros((20, 20, 3), np.uint8))
    assert load_image(np.zeros((20, 20, 3), np.uint8)).shape == (20, 20, 3)


def test_a_dicom_frame_is_counted_from_its_header(tmp_path):
    from test_dicom import write_dicom

    from explainer.inputs.images import image_size, pixel_budget

    path = write_dicom(tmp_path / "scan.dcm", np.zeros((2, 2), np.uint16), Rows=12000, Columns=9000)
    assert image_size(path) == (9000, 12000)
    with pytest.raises(ImageError, match=r"The DICOM file's image is 9000×12000 pixels; the limit is 40") as caught:
        load_image(path)
    assert "scan" not in str(caught.value)  # DICOM files are never named
    small = write_dicom(tmp_path / "small.dcm", np.zeros((100, 100), np.uint16))
    with pixel_budget(15_000) as budget:
        load_image(small)
        assert budget.spent == 10_000
        with pytest.raises(ImageError, match="would decode"):
            load_image(small)


def test_image_size_reads_headers_only(tmp_path):
    from explainer.inputs.images import image_size

    assert image_size(save(Image.new("RGB", (30, 20)), tmp_path / "a.png")) == (30, 20)
    (tmp_path / "b.png").write_bytes(b"not an image")
    assert image_size(tmp_path / "b.png") is None
