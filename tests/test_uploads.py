"""The upload gate alone: every payload shape, symlinks, ``..`` and odd values."""

from __future__ import annotations

import os

import pytest

from explainer.server.uploads import REFUSED, UploadRefused, uploaded_file, uploaded_files


@pytest.fixture
def folders(tmp_path):
    uploads, outside = tmp_path / "uploads", tmp_path / "private"
    (uploads / "abc").mkdir(parents=True)
    outside.mkdir()
    (uploads / "abc" / "cat.png").write_bytes(b"x")
    (outside / "secret.png").write_bytes(b"y")
    return uploads, outside


def test_files_inside_the_upload_folder_pass_in_every_shape(folders):
    uploads, _outside = folders
    inside = str(uploads / "abc" / "cat.png")
    for payload in (inside, {"path": inside}, {"path": inside, "meta": {"_type": "gradio.FileData"}, "url": "x"}):
        assert uploaded_file(payload, uploads) == os.path.realpath(inside)
    assert uploaded_files([{"path": inside}, None, ""], uploads) == [os.path.realpath(inside)]


@pytest.mark.parametrize("make", [
    lambda u, o: str(o / "secret.png"),
    lambda u, o: {"path": str(o / "secret.png")},
    lambda u, o: {"path": str(u / "abc" / ".." / ".." / "private" / "secret.png")},
    lambda u, o: {"path": str(o / "missing.png")},
    lambda u, o: {"url": "http://127.0.0.1/secret.png"},
    lambda u, o: {"url": f"file://{o}/secret.png", "path": None},
    lambda u, o: str(u),  # the folder itself
    lambda u, o: "relative/../../etc/passwd",
    lambda u, o: "bad\0name",
    lambda u, o: 42,
    lambda u, o: ["list", "inside"],
])
def test_everything_else_gets_the_same_refusal(folders, make):
    uploads, outside = folders
    with pytest.raises(UploadRefused) as refused:
        uploaded_file(make(uploads, outside), uploads)
    assert str(refused.value) == REFUSED


def test_a_symlink_inside_pointing_outside_is_refused(folders):
    uploads, outside = folders
    link = uploads / "abc" / "link.png"
    link.symlink_to(outside / "secret.png")
    with pytest.raises(UploadRefused):
        uploaded_file({"path": str(link)}, uploads)
    (uploads / "abc" / "dir-link").symlink_to(outside)
    with pytest.raises(UploadRefused):
        uploaded_file(str(uploads / "abc" / "dir-link" / "secret.png"), uploads)


def test_no_file_is_none_and_a_list_payload_must_be_a_list(folders):
    uploads, _outside = folders
    assert uploaded_file(None, uploads) is None and uploaded_file({}, uploads) is None
    assert uploaded_files(None, uploads) == []
    with pytest.raises(UploadRefused):
        uploaded_files("not a list", uploads)
