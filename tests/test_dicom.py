"""DICOM input: files written with pydicom here, read as a viewer shows them, and no patient data ever leaks."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from explainer import ImageError, explain, load_image, load_model
from explainer.inputs.dicom import PIXEL_TAGS, is_dicom
from explainer.inputs.images import IMAGE_SUFFIXES, display_name, load_image_with_notes

ROOT = Path(__file__).resolve().parents[1]
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-12345", "PatientBirthDate": "19700101",
           "StudyDate": "20240102", "InstitutionName": "St Elsewhere Hospital", "ReferringPhysicianName": "Kildare^J"}
SECRETS = ("Doe", "Jane", "PID-12345", "19700101", "20240102", "Elsewhere", "Kildare")

#: 64 columns rising 0, 64, ..., 4032 (a 12-bit ramp): column c holds 64 * c.
RAMP = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (64, 1))


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                frames: int = 1, **attrs) -> Path:
    """A DICOM Part 10 file (explicit VR little endian) with patient data in its header, as scanners write them."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    for key, value in PATIENT.items():
        setattr(ds, key, value)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    colour = photometric == "RGB"
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(np.issubdtype(pixels.dtype, np.signedinteger))
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def compressed(path: Path, syntax) -> Path:
    """A file declaring a compressed transfer syntax, holding fake (undecodable) compressed pixel data."""
    ds = pydicom.dcmread(write_dicom(path, np.zeros((8, 8), np.uint8)))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 not really compressed pixels \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def grey(path: Path) -> np.ndarray:
    pixels = load_image(path)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[-1] == 3
    assert (pixels == pixels[..., :1]).all()  # grey repeated over the three channels
    return pixels[..., 0]


# ------------------------------------------------------------------------------------------------- rendering


def test_monochrome2_without_window_uses_min_max(tmp_path):
    row = grey(write_dicom(tmp_path / "m2.dcm", RAMP))[0]
    assert row[0] == 0 and row[-1] == 255  # the data's own range, not 0-65535
    assert (np.diff(row.astype(int)) >= 0).all()
    assert abs(int(row[32]) - 128) <= 2


def test_monochrome1_is_inverted(tmp_path):
    plain = grey(write_dicom(tmp_path / "m2.dcm", RAMP))
    inverted = grey(write_dicom(tmp_path / "m1.dcm", RAMP, photometric="MONOCHROME1"))
    assert inverted[0, 0] == 255 and inverted[0, -1] == 0
    np.testing.assert_array_equal(inverted, 255 - plain)


def test_window_centre_and_width(tmp_path):
    # Window 1536..2560 of a 12-bit ramp: below is black, above is white, the centre mid-grey.
    row = grey(write_dicom(tmp_path / "w.dcm", RAMP, bits_stored=12, WindowCenter=2048, WindowWidth=1024))[0]
    assert (row[:24] == 0).all() and (row[41:] == 255).all()
    assert abs(int(row[32]) - 128) <= 1
    assert (np.diff(row[24:41].astype(int)) > 0).all()


def test_window_on_monochrome1_is_inverted_after_windowing(tmp_path):
    row = grey(write_dicom(tmp_path / "w1.dcm", RAMP, photometric="MONOCHROME1", WindowCenter=2048,
                           WindowWidth=1024))[0]
    assert (row[:24] == 255).all() and (row[41:] == 0).all()


def test_rescale_slope_and_intercept_before_the_window(tmp_path):
    # Stored 0..4032 with slope 2, intercept -1024 is -1024..7040 (like Hounsfield units); stored 512 is 0.
    # A window of width 2000 around 0 is only right if the rescale is applied first.
    row = grey(write_dicom(tmp_path / "ct.dcm", RAMP, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=0,
                           WindowWidth=2000))[0]
    assert row[0] == 0 and abs(int(row[8]) - 128) <= 1 and (row[16:] == 255).all()
    windowless = grey(write_dicom(tmp_path / "ct2.dcm", RAMP, RescaleSlope=2, RescaleIntercept=-1024))[0]
    assert windowless[0] == 0 and windowless[-1] == 255


def test_signed_sixteen_bit_with_sigmoid_window(tmp_path):
    signed = (RAMP.astype(np.int16) - 2000)
    row = grey(write_dicom(tmp_path / "s.dcm", signed, WindowCenter=0, WindowWidth=1000, VOILUTFunction="SIGMOID"))[0]
    column_of_zero = 2000 // 64 + 1
    assert row[0] < 5 and row[-1] > 250 and abs(int(row[column_of_zero]) - 128) < 25


def test_voi_lut_sequence_is_preferred(tmp_path):
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 12]
    inverting = np.arange(4095, -1, -1, dtype="<u2")  # an inverting lookup table: shows it was applied
    lut.add_new(0x00283006, "OW", inverting.tobytes())  # LUT Data, stored as OW like most scanners do
    row = grey(write_dicom(tmp_path / "lut.dcm", RAMP, bits_stored=12, VOILUTSequence=[lut]))[0]
    assert row[0] == 255 and row[-1] < 5


@pytest.mark.parametrize(("dtype", "bits", "top"), [(np.uint8, 8, 255), (np.uint16, 12, 4095), (np.uint16, 16, 65535)])
def test_bit_depths(tmp_path, dtype, bits, top):
    pixels = np.linspace(top // 4, top, 64 * 64).reshape(64, 64).astype(dtype)
    image = grey(write_dicom(tmp_path / f"b{bits}.dcm", pixels, bits_stored=bits))
    assert image.min() == 0 and image.max() == 255


def test_twelve_bit_values_above_bits_stored_are_ignored(tmp_path):
    # Bits above Bits Stored are not pixel data (some scanners put overlays there): pydicom masks them.
    pixels = RAMP | np.uint16(0xF000)
    np.testing.assert_array_equal(grey(write_dicom(tmp_path / "o.dcm", pixels, bits_stored=12)),
                                  grey(write_dicom(tmp_path / "p.dcm", RAMP, bits_stored=12)))


def test_multi_frame_explains_the_first_frame_and_says_so(tmp_path):
    stack = np.stack([RAMP, RAMP[:, ::-1], RAMP[::-1]])
    loaded = load_image_with_notes(write_dicom(tmp_path / "cine.dcm", stack, frames=3))
    assert loaded.pixels[0, 0, 0] == 0 and loaded.pixels[0, -1, 0] == 255  # frame 0, not the mirrored frame 1
    assert loaded.notes == ["This DICOM file has 3 frames; the first is explained."]
    assert loaded.dicom and loaded.name == "the DICOM file"
    assert load_image_with_notes(write_dicom(tmp_path / "one.dcm", RAMP)).notes == []


def test_rgb_dicom_keeps_its_colour(tmp_path):
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :12] = (200, 30, 10)
    rgb[:, 12:] = (10, 40, 220)
    pixels = load_image(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    np.testing.assert_array_equal(pixels, rgb)


def test_ybr_and_palette_colour(tmp_path):
    from pydicom.pixels import convert_color_space

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[...] = (200, 50, 0)
    ybr = write_dicom(tmp_path / "ybr.dcm", convert_color_space(rgb, "RGB", "YBR_FULL"), photometric="RGB")
    ds = pydicom.dcmread(ybr)
    ds.PhotometricInterpretation = "YBR_FULL"  # as ultrasound machines often store colour
    ds.save_as(ybr)
    assert np.abs(load_image(ybr).astype(int) - rgb).max() <= 2

    indices = np.tile(np.arange(4, dtype=np.uint8), (4, 1))  # palette entries 0-3: black, red, green, blue
    descriptor = [256, 0, 16]
    palette = write_dicom(tmp_path / "palette.dcm", indices, photometric="PALETTE COLOR",
                          RedPaletteColorLookupTableDescriptor=descriptor,
                          GreenPaletteColorLookupTableDescriptor=descriptor,
                          BluePaletteColorLookupTableDescriptor=descriptor)
    ds = pydicom.dcmread(palette)
    for channel, name in enumerate(("Red", "Green", "Blue")):
        lut = np.zeros(256, "<u2")
        lut[channel + 1] = 65535
        setattr(ds, f"{name}PaletteColorLookupTableData", lut.tobytes())
    ds.save_as(palette)
    assert load_image(palette)[0].tolist() == [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]


def test_preamble_recognised_whatever_the_name(tmp_path):
    dcm = write_dicom(tmp_path / "scan.dcm", RAMP)
    disguised = tmp_path / "scan.bin"
    disguised.write_bytes(dcm.read_bytes())
    assert is_dicom(disguised) and not is_dicom(tmp_path / "scan.png")
    loaded = load_image_with_notes(disguised)
    assert loaded.dicom and display_name(disguised) == "the DICOM file"
    np.testing.assert_array_equal(loaded.pixels, load_image(dcm))
    assert ".dcm" in IMAGE_SUFFIXES


def test_dcm_without_preamble_or_file_meta(tmp_path):
    # Older devices write the bare dataset (implicit VR little endian, no "DICM" marker): the .dcm name is enough.
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 64, 64, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = RAMP.tobytes()
    path = tmp_path / "old.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(load_image(path), load_image(write_dicom(tmp_path / "new.dcm", RAMP)))


# ------------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("syntax", "install"), [
    (JPEGBaseline8Bit, "pylibjpeg-libjpeg"),
    (JPEG2000Lossless, "pylibjpeg-openjpeg"),
    (JPEGLSLossless, "pylibjpeg-libjpeg"),
])
def test_compressed_pixels_name_what_to_install(tmp_path, syntax, install):
    path = compressed(tmp_path / "Doe_Jane.dcm", syntax)
    with pytest.raises(ImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert f"pip install pylibjpeg {install}" in message and syntax.name in message
    assert "Doe" not in message and "Traceback" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no pydicom text chained


@pytest.mark.parametrize("content", [b"", b"hello, this is not DICOM at all" * 10,
                                     b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage"])
def test_damaged_dicom_is_a_clear_error_without_the_file_name(tmp_path, content):
    path = tmp_path / "Doe_Jane_PID-12345.dcm"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="DICOM file") as caught:
        load_image(path)
    assert "Doe" not in str(caught.value) and "PID" not in str(caught.value)


def test_corrupted_files_fail_cleanly(tmp_path):
    """Cut short or with bytes changed anywhere, a DICOM file gives pixels or an ImageError, nothing else."""
    good = write_dicom(tmp_path / "good.dcm", np.stack([RAMP, RAMP]), frames=2, bits_stored=12, WindowCenter=2048,
                       WindowWidth=1024, RescaleSlope=1, RescaleIntercept=0).read_bytes()
    rng = np.random.default_rng(7)
    variants = [good[:cut] for cut in rng.integers(132, len(good), 15)]
    for _ in range(25):
        damaged = bytearray(good)
        for at in rng.integers(132, 900, 4):  # the header and the start of the pixels
            damaged[at] = int(rng.integers(0, 256))
        variants.append(bytes(damaged))
    outcomes = {"pixels": 0, "refused": 0}
    for n, content in enumerate(variants):
        path = tmp_path / f"bad{n}.dcm"
        path.write_bytes(content)
        try:
            pixels = load_image(path)
        except ImageError as err:
            assert "DICOM file" in str(err) and "bad" not in str(err) and not leaks(str(err))
            outcomes["refused"] += 1
        else:
            assert pixels.dtype == np.uint8 and pixels.shape[-1] == 3
            outcomes["pixels"] += 1
    assert outcomes["refused"] >= 10  # truncated pixel data is refused, not shown half black


def test_missing_and_pixel_less_dicom(tmp_path):
    with pytest.raises(ImageError, match="DICOM file was not found") as caught:
        load_image(tmp_path / "Doe_Jane.dcm")
    assert "Doe" not in str(caught.value)
    path = write_dicom(tmp_path / "report.dcm", RAMP)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageError, match="no pixel data"):
        load_image(path)


# ------------------------------------------------------------------------------------------------- privacy


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret.lower() in text.lower()]


def test_only_pixel_attributes_are_read(tmp_path, monkeypatch):
    read = []
    original = pydicom.dcmread

    def spy(*args, **kwargs):
        read.append(ds := original(*args, **kwargs))
        return ds

    monkeypatch.setattr(pydicom, "dcmread", spy)
    load_image(write_dicom(tmp_path / "x.dcm", RAMP))
    (ds,) = read
    assert "PatientName" not in ds and "PatientID" not in ds and "StudyDate" not in ds
    assert {int(element.tag) for element in ds} <= set(PIXEL_TAGS) | {0x00080005}  # Specific Character Set: encoding
    assert not leaks(str(ds))


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes")


def test_explain_through_the_python_api(tmp_path, shapes):
    picture = np.zeros((64, 64), np.uint16)
    picture[20:44, 20:44] = 3000  # a bright square on a dark field, 16-bit like an X-ray
    path = write_dicom(tmp_path / "square.dcm", picture)
    result = explain(shapes, path)  # a path, as a user of the Python API passes it
    np.testing.assert_array_equal(result.image, load_image(path))
    assert result.image.shape == (64, 64, 3) and result.image.max() == 255
    assert result.heatmap.shape == (64, 64) and np.isfinite(result.heatmap).all()
    assert not leaks(json.dumps(result.to_dict()))


def test_no_leak_through_the_cli(tmp_path):
    path = write_dicom(tmp_path / "file.dcm", np.stack([RAMP, RAMP[::-1]]), frames=2, WindowCenter=2048,
                       WindowWidth=2048)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "explainer", "explain", str(path), "--model", "shapes", "--json"]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not leaks(run.stdout + run.stderr)
    record = json.loads(run.stdout)
    assert record["notes"] == ["This DICOM file has 2 frames; the first is explained."]
    assert record["image_size"] == [64, 64] and record["target"]["label"]


def test_cli_finds_dicom_in_folders_and_prints_notes(tmp_path, capsys):
    from explainer.cli.main import main

    write_dicom(tmp_path / "file.dcm", np.stack([RAMP, RAMP[::-1]]), frames=2)
    compressed(tmp_path / "other.dcm", JPEGBaseline8Bit)
    assert main(["explain", str(tmp_path), "--model", "shapes"]) == 1  # one explained, one refused
    out, err = capsys.readouterr()
    assert "file.dcm: " in out and len(out.splitlines()) == 1
    assert "note: " in err and "has 2 frames; the first is explained." in err
    assert "pip install pylibjpeg" in err and "Traceback" not in err
    assert not leaks(out + err)


def test_no_leak_through_the_chat_or_the_log(tmp_path, shapes, caplog):
    from explainer.chat import ChatSession

    caplog.set_level(logging.DEBUG)
    stack = np.stack([RAMP, RAMP[::-1]])
    path = write_dicom(tmp_path / "file.dcm", stack, frames=2, WindowCenter=2048, WindowWidth=1024)
    reply = ChatSession(shapes).respond("why?", [str(path)])
    assert reply.images and not reply.error
    assert not leaks(reply.markdown) and not leaks(json.dumps(reply.data, default=str))
    bad = compressed(tmp_path / "other.dcm", JPEGBaseline8Bit)
    refusal = ChatSession(shapes).respond("why?", [str(bad)])
    assert "pylibjpeg" in refusal.markdown and not leaks(refusal.markdown)
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert not leaks(logged)
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]


def test_pydicom_logs_nothing_even_with_its_debugging_on(tmp_path, caplog):
    # pydicom's debugging logs every element it reads, patient name included: reading silences it regardless.
    caplog.set_level(logging.DEBUG)
    pydicom.config.debug(True, default_handler=False)
    try:
        load_image(write_dicom(tmp_path / "x.dcm", RAMP))
        with pytest.raises(ImageError):
            load_image(compressed(tmp_path / "y.dcm", JPEGBaseline8Bit))
    finally:
        pydicom.config.debug(False, default_handler=False)
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
