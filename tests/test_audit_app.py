"""The Audit tab of the launched app, driven with gradio_client: a zip in, a report and results out."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from app_server import plain, running_app, upload_dir
from gradio_client import Client, handle_file

from explainer.demo.audit_data import write_audit_folder


@pytest.fixture(scope="module")
def shortcut_zip(tmp_path_factory):
    images = write_audit_folder(tmp_path_factory.mktemp("set") / "set", n=12)
    # Zipped as a person zips the folder: set/images/<class>/..., set/masks/<class>/..., set/boxes.csv.
    return shutil.make_archive(str(images.parent.parent / "validation"), "zip", images.parent.parent, "set")


def audit(url: str, archive: str, model: str) -> tuple[str, list[dict]]:
    client = Client(url, verbose=False, download_files=False)
    return client.predict(handle_file(archive), model, "gradcam", api_name="/audit")


def fetch_text(url: str, file: dict) -> str:
    import httpx

    return httpx.get(file["url"], timeout=60).text


def test_the_shortcut_is_caught_from_a_zip(served, shortcut_zip):
    url, _chat_app = served
    summary, files = audit(url, shortcut_zip, "shapes-shortcut")
    text = plain(summary)
    assert "Audit of 12 images" in text and "right for the wrong reason" in text
    names = sorted(Path(f["path"]).name for f in files)
    assert names == ["report.html", "results.jsonl"]
    results = next(f for f in files if f["path"].endswith(".jsonl"))
    records = [json.loads(line) for line in fetch_text(url, results).splitlines()]
    assert len(records) == 12 and all("expected" in r for r in records)
    flagged = sum(r.get("flag") == "wrong_reason" for r in records)
    correct = sum(bool(r["correct"]) for r in records)
    assert correct >= 10 and flagged >= correct // 2  # most right answers rest on the tag, not the shape
    report = fetch_text(url, next(f for f in files if f["path"].endswith(".html")))
    assert "<html" in report.lower() and "data:image/jpeg;base64," in report  # self-contained


def test_the_honest_model_is_not_flagged_the_same_way(served, shortcut_zip):
    url, _chat_app = served
    _summary, files = audit(url, shortcut_zip, "shapes")
    results = next(f for f in files if f["path"].endswith(".jsonl"))
    records = [json.loads(line) for line in fetch_text(url, results).splitlines()]
    assert sum(bool(r["expected"]["hit"]) for r in records) >= 10  # its peak is on the shape


@pytest.mark.parametrize("members", [{"notes.txt": b"hello"}, {}])
def test_a_zip_without_images_gets_a_plain_message(served, tmp_path, members):
    url, _chat_app = served
    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    with pytest.raises(Exception, match="no images"):
        audit(url, str(archive), "shapes")


def test_not_a_zip_and_too_many_images(served, tmp_path):
    url, _chat_app = served
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"definitely not a zip")
    with pytest.raises(Exception, match="not a zip"):
        audit(url, str(fake), "shapes")
    with upload_dir() as folder, running_app(EXPLAINER_AUDIT_MAX_IMAGES="5") as (small_url, _app):
        many = write_audit_folder(folder / "many", n=8)
        archive = shutil.make_archive(str(folder / "many"), "zip", many)  # the class folders alone
        with pytest.raises(Exception, match="at most 5"):
            audit(small_url, archive, "shapes")


def test_an_audit_stops_at_its_time_limit_and_reports_what_it_explained():
    # With a limit shorter than any batch, the first batch (16 images) runs and no other starts.
    with upload_dir() as folder, running_app(EXPLAINER_AUDIT_SECONDS="0.001") as (url, _app):
        images = write_audit_folder(folder / "long", n=40)
        archive = shutil.make_archive(str(folder / "long"), "zip", images.parent, images.name)
        summary, files = audit(url, archive, "shapes")
        text = plain(summary)
        assert "Audit of 16 of 40 images" in text
        assert "stopped at this server's time limit for one audit (0.001 seconds): 16 of 40 images" in text
        results = next(f for f in files if f["path"].endswith(".jsonl"))
        assert len(fetch_text(url, results).splitlines()) == 16
        report = fetch_text(url, next(f for f in files if f["path"].endswith(".html")))
        assert "16 of 40 images were explained" in report


def test_the_sample_set_is_one_click_and_the_report_shows_in_the_page(served):
    _url, chat_app = served
    import gradio as gr

    summary, files = chat_app.audit_sample("auto", None)  # a private event: driven as the page drives it
    text = plain(summary)
    assert "Audit of 60 images" in text and "shapes-shortcut" in text and "right for the wrong reason" in text
    frame = chat_app.show_report([{"path": path} for path in files])
    assert frame.startswith("<iframe") and "srcdoc=" in frame and "Least confident" in frame
    with pytest.raises(gr.Error, match="did not come from an upload"):  # only this server's files are shown
        chat_app.show_report([{"path": "/etc/passwd"}])
    assert chat_app.show_report([]) == "" and chat_app.show_report("nonsense") == ""


def test_a_report_without_regions_still_has_pictures_and_speaks_plainly(served, tmp_path):
    url, _chat_app = served
    images = write_audit_folder(tmp_path / "set", n=8)
    archive = shutil.make_archive(str(tmp_path / "plain"), "zip", images)  # class folders only: no boxes, no masks
    summary, files = audit(url, archive, "shapes")
    report = fetch_text(url, next(f for f in files if f["path"].endswith(".html")))
    assert "Least confident" in report and report.count("data:image/jpeg;base64,") >= 8
    assert "--masks" not in plain(summary) and "boxes.csv" in report


def test_calibrating_the_chats_model_on_a_zip_lives_with_the_session(served, tmp_path):
    _url, chat_app = served
    images = write_audit_folder(tmp_path / "set", n=120, tag=False)
    archive = shutil.make_archive(str(tmp_path / "calib"), "zip", images)
    with upload_dir() as uploads:
        uploaded = shutil.copy(archive, uploads / "calib.zip")
        visit = chat_app.new_visit()
        shared = visit.chat.model
        text = plain(chat_app.calibrate(str(uploaded), visit))
        mine = visit.chat.model
    assert "calibrated for this session" in text and "ECE" in text
    assert mine is not shared and mine.keras_model is shared.keras_model  # the same network, its own calibration
    assert mine.info.calibration is not None and mine.info.calibration is not shared.info.calibration
    assert mine.info.calibration.fitted_on < 120  # fitted on part of the set, the rest held out to measure it
    assert chat_app.new_visit().chat.model is shared  # another visitor keeps the shared model
    assert visit.menu.get(visit.menu.key_of(mine)) is mine
