"""Unpacking a visitor's zip for an audit: the layouts people zip, and the zips attackers send."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainer.inputs.archive import ArchiveError, extract_audit_folder


def png(size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(buffer, format="png")
    return buffer.getvalue()


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_class_folders_inside_a_zipped_folder(tmp_path):
    archive = make_zip(tmp_path / "set.zip", {"set/cat/1.png": png(), "set/dog/2.png": png(),
                                              "set/__MACOSX/._1.png": b"junk", "set/notes.txt": b"hello"})
    folder = extract_audit_folder(archive, tmp_path / "out")
    assert files(folder.images) == {"cat/1.png", "dog/2.png"} and folder.count == 2
    assert folder.boxes is None and folder.masks is None
    assert any("not images" in note for note in folder.notes)


def test_the_demo_layout_with_boxes_and_masks(tmp_path):
    archive = make_zip(tmp_path / "audit.zip", {"images/circle/a.png": png(), "masks/circle/a.png": png(),
                                                "boxes.csv": b"path,x,y,w,h\ncircle/a.png,1,1,4,4\n"})
    folder = extract_audit_folder(archive, tmp_path / "out")
    assert files(folder.images) == {"circle/a.png"}
    assert folder.boxes.read_text().startswith("path,x,y,w,h") and files(folder.masks) == {"circle/a.png"}


def test_a_single_class_folder_keeps_its_class(tmp_path):
    folder = extract_audit_folder(make_zip(tmp_path / "a.zip", {"cat/1.png": png(), "cat/2.png": png()}),
                                  tmp_path / "out")
    assert files(folder.images) == {"cat/1.png", "cat/2.png"}


def test_unsafe_names_and_nested_archives_are_left_out(tmp_path):
    inner = make_zip(tmp_path / "inner.zip", {"x.png": png()}).read_bytes()
    archive = make_zip(tmp_path / "evil.zip", {"../../escape.png": png(), "/abs/root.png": png(), "ok.png": png(),
                                               "more.zip": inner})
    folder = extract_audit_folder(archive, tmp_path / "out")
    assert files(folder.images) == {"ok.png"}
    assert not (tmp_path / "escape.png").exists() and not Path("/abs/root.png").exists()
    assert any("unsafe names" in n for n in folder.notes) and any("archives inside" in n for n in folder.notes)


def test_limits_are_checked_before_anything_is_written(tmp_path):
    archive = make_zip(tmp_path / "many.zip", {f"c/{i}.png": png() for i in range(6)})
    with pytest.raises(ArchiveError, match="at most 5"):
        extract_audit_folder(archive, tmp_path / "out", max_images=5)
    assert not (tmp_path / "out").exists()
    bomb = make_zip(tmp_path / "bomb.zip", {"c/big.png": b"\0" * (4 * 2**20)})  # 4 MB of zeros: a few KB zipped
    assert bomb.stat().st_size < 64 * 1024
    with pytest.raises(ArchiveError, match="MB"):
        extract_audit_folder(bomb, tmp_path / "out2", max_bytes=2**20)


def test_a_member_that_inflates_beyond_its_declared_size_is_stopped(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "liar.zip", {"c/a.png": b"\0" * 300_000})
    with zipfile.ZipFile(archive) as zipped:
        declared = zipped.infolist()[0].file_size
    real_plan = __import__("explainer.inputs.archive", fromlist=["_plan"])._plan

    def lying_plan(members, root, max_images, max_bytes):  # as if the header had declared 10 bytes
        for member in members:
            member.file_size = 10
        return real_plan(members, root, max_images, max_bytes)

    monkeypatch.setattr("explainer.inputs.archive._plan", lying_plan)
    with pytest.raises(ArchiveError):  # zipfile's own size check or our byte budget: never the whole member
        extract_audit_folder(archive, tmp_path / "out", max_bytes=declared // 2)
    assert sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file()) <= declared // 2


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04broken"])
def test_not_a_zip(tmp_path, content):
    path = tmp_path / "x.zip"
    path.write_bytes(content)
    with pytest.raises(ArchiveError, match="not a zip"):
        extract_audit_folder(path, tmp_path / "out")


def test_a_zip_without_images(tmp_path):
    with pytest.raises(ArchiveError, match="no images"):
        extract_audit_folder(make_zip(tmp_path / "t.zip", {"a.txt": b"x", "b/c.csv": b"y"}), tmp_path / "out")


def patched(path: Path, local: int, central: int, value: int) -> Path:
    """``path`` with a 2-byte field of every member's local header (at ``local``) and central record (``central``)
    set to ``value``: how a zip tool marks encryption or another compression method."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        at = data.find(signature)
        while at >= 0:
            data[at + offset: at + offset + 2] = value.to_bytes(2, "little")
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))
    return path


def test_an_encrypted_zip_is_named_as_such(tmp_path):
    archive = patched(make_zip(tmp_path / "secret.zip", {"c/1.png": png()}), 6, 8, 0x1)  # flag bit 0: encrypted
    with zipfile.ZipFile(archive) as zipped, pytest.raises(RuntimeError, match="password"):
        zipped.read("c/1.png")  # what the zip module itself would do
    with pytest.raises(ArchiveError, match=r"encrypted \(protected by a password\)") as caught:
        extract_audit_folder(archive, tmp_path / "out")
    assert "damaged" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_an_unsupported_compression_method_is_named_as_such(tmp_path):
    archive = patched(make_zip(tmp_path / "d64.zip", {"c/1.png": png()}, zipfile.ZIP_STORED), 8, 10, 9)  # Deflate64
    with pytest.raises(ArchiveError, match="compression method this server cannot unpack"):
        extract_audit_folder(archive, tmp_path / "out")


def test_names_too_long_or_too_deep_are_left_out_and_said_so(tmp_path):
    long_name = "a" * 300 + ".png"  # over the 255 bytes a file name may have
    deep = "/".join(["d"] * 3000) + "/x.png"
    archive = make_zip(tmp_path / "names.zip", {f"c/{long_name}": png(), deep: png(), "c/ok.png": png()})
    folder = extract_audit_folder(archive, tmp_path / "out")
    assert files(folder.images) == {"c/ok.png"}
    assert any("2 files whose names are too long" in note and "nested too deep" in note for note in folder.notes)
    only = make_zip(tmp_path / "only.zip", {f"c/{long_name}": png(), deep: png()})
    with pytest.raises(ArchiveError, match="no images") as caught:
        extract_audit_folder(only, tmp_path / "out2")
    assert "too long" in str(caught.value) and "damaged" not in str(caught.value)


def test_the_pixels_of_all_images_are_summed_from_their_headers(tmp_path):
    big = io.BytesIO()
    Image.new("L", (1000, 1000)).save(big, format="png")
    archive = make_zip(tmp_path / "heavy.zip", {f"c/{i}.png": big.getvalue() for i in range(3)} | {"masks/c/0.png":
                                                                                                      big.getvalue()})
    with pytest.raises(ArchiveError, match=r"hold 4 megapixels in all \(the largest is 1000×1000\); an audit here "
                                           r"decodes at most 3 megapixels"):
        extract_audit_folder(archive, tmp_path / "out", max_pixels=3_000_000)
    assert extract_audit_folder(archive, tmp_path / "out2", max_pixels=4_000_000).count == 3
