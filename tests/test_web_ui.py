"""The web page in a real headless Chromium against a real server (``reid serve`` on 127.0.0.1,
data dir in tmp_path): upload CUHK03 camera-B crops, search with a camera-A crop, see the right
person first, open the item, delete from the gallery.

Skips when Debian's chromium, Python playwright or ../shared CUHK03 is missing. Set
REID_UPDATE_SCREENSHOT=1 to refresh docs/screenshot.png from this run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port

from tests.conftest import REPO, shared_path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Identities the shipped model ranks correctly in this small gallery (query 0005 camera A).
GALLERY_IDS = ["0005", "0030", "0035", "0010", "0017", "0021"]
QUERY = "0005_00.jpg"



def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server not ready after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server_env() -> dict[str, str]:
    return {}


@pytest.fixture
def server(tmp_path: Path, server_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "REID_DATA_DIR": str(tmp_path / "data"), "REID_HOST": "127.0.0.1",
           "REID_PORT": str(port), "REID_QUEUE": "embedded", "OMP_NUM_THREADS": "1",
           "REID_INTRA_OP_THREADS": "1", **server_env}
    log = tmp_path / "server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "reid.cli", "serve"], cwd=REPO, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_upload_search_delete_in_a_real_browser(server: str, browser, tmp_path: Path) -> None:
    val = shared_path("data", "cuhk03", "val")
    gallery = [p for i in GALLERY_IDS for p in sorted(val.glob(f"{i}_0[5-9].jpg"))[:2]]
    assert len(gallery) == 2 * len(GALLERY_IDS)
    query = val / QUERY

    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())
    page.goto(server + "/")
    assert page.title() == "Re-ID search"
    page.wait_for_selector("#health.ok", timeout=15000)

    # upload camera-B crops
    page.click("nav >> text=Upload")
    page.set_input_files("#upload-files", [str(p) for p in gallery])
    page.fill("#upload-form input[name=camera]", "cam-B")
    page.fill("#upload-form input[name=timestamp]", "2024-05-01T12:00:00")
    page.click("#upload-btn")
    page.wait_for_function("document.querySelector('#upload-status').textContent.includes('indexed')",
                           timeout=60000)
    assert f"indexed {len(gallery)} items" in page.inner_text("#upload-status")

    # search with a camera-A crop of identity 0005
    page.click("nav >> text=Search")
    page.set_input_files("#query-files", str(query))
    page.fill("#search-form input[name=top_k]", "8")
    page.click("#search-btn")
    page.wait_for_selector("#results li.card", timeout=60000)
    cards = page.locator("#results li.card")
    assert cards.count() == 8
    first_source = cards.nth(0).locator(".source").inner_text()
    assert first_source.startswith("0005_"), f"first hit is {first_source}, expected identity 0005"
    assert "cam-B" in cards.nth(0).inner_text()
    assert page.locator("#results li.card").nth(0).locator("img").evaluate(  # waits for it to load (or fail)
        "img => img.complete ? img.naturalWidth > 0 : new Promise(done => {"
        " img.onload = () => done(img.naturalWidth > 0); img.onerror = () => done(false); })"
    ), "thumbnail did not load"
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete)")
    shot = tmp_path / "screenshot.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("REID_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, REPO / "docs" / "screenshot.png")

    # the item link opens its details
    cards.nth(0).locator("a.link").click()
    page.wait_for_selector("#detail[open] dl")
    assert "0005_" in page.inner_text("#detail-body")
    page.click("#detail .close")

    # "find similar" on the best match: the item is the query now, its other crop comes first
    top_id = cards.nth(0).get_attribute("data-id")
    cards.nth(0).locator("text=find similar").click()
    page.wait_for_function(f"document.querySelector('#search-status').textContent.includes('like item {top_id}')",
                           timeout=60000)
    assert cards.count() == 8 and top_id not in [cards.nth(i).get_attribute("data-id") for i in range(8)]
    assert cards.nth(0).locator(".source").inner_text().startswith("0005_")

    # gallery: all items listed; delete the best match
    page.click("nav >> text=Gallery")
    page.wait_for_function(
        f"document.querySelectorAll('#gallery li.card').length === {len(gallery)}", timeout=20000)
    page.wait_for_selector(f"#camera-chips .chip >> text=cam-B ({len(gallery)})")
    page.click(f"#gallery li.card[data-id='{top_id}'] button.danger")
    page.wait_for_function(
        f"document.querySelectorAll('#gallery li.card').length === {len(gallery) - 1}", timeout=20000)
    page.wait_for_selector(f"#camera-chips .chip >> text=cam-B ({len(gallery) - 1})")
    # browsing by camera: a camera with no items shows none
    page.fill("#gallery-form input[name=camera]", "cam-A")
    page.click("#gallery-form button[type=submit]")
    page.wait_for_function("document.querySelector('#gallery-status').textContent.startsWith('0 of 0')")
    page.click("#camera-chips .chip >> text=cam-B")
    page.wait_for_function(
        f"document.querySelectorAll('#gallery li.card').length === {len(gallery) - 1}", timeout=20000)
    assert httpx.get(f"{server}/gallery/{top_id}", timeout=5).status_code == 404
    listed = httpx.get(f"{server}/gallery", params={"limit": 100}, timeout=5).json()
    assert listed["total"] == len(gallery) - 1

    # searching again no longer returns the deleted item
    page.click("nav >> text=Search")
    page.click("#search-btn")
    page.wait_for_function(f"!document.querySelector(\"#results li.card[data-id='{top_id}']\") && "
                           "document.querySelectorAll('#results li.card').length > 0", timeout=60000)

    # erasing by filter: offered only with a filter set; deletes what the filter lists
    page.click("nav >> text=Gallery")
    page.fill("#gallery-form input[name=camera]", "")
    page.click("#gallery-form button[type=submit]")
    status = "document.querySelector('#gallery-status').textContent"
    page.wait_for_function(f"{status}.endsWith('of {len(gallery) - 1} items.')")
    assert page.locator("#gallery-delete").is_hidden()
    page.fill("#gallery-form input[name=camera]", "cam-B")
    page.click("#gallery-form button[type=submit]")
    page.wait_for_selector("#gallery-delete:not([hidden])")
    page.fill("#gallery-form input[name=camera]", "cam-A")  # edited, not listed: the listed cam-B goes
    page.click("#gallery-delete")
    page.wait_for_function(f"{status} === 'Deleted {len(gallery) - 1} items.'", timeout=20000)
    assert page.locator("#gallery li.card").count() == 0 and page.locator("#gallery-delete").is_hidden()
    assert httpx.get(f"{server}/gallery", timeout=5).json()["total"] == 0
    assert not errors, errors


@pytest.mark.parametrize("server_env", [{"REID_API_KEY": "s3cret-key"}])
def test_api_key_field_unlocks_the_page(server: str, browser) -> None:
    """With auth on, the page explains the 401, and the key typed into its field (kept in
    localStorage) is sent as X-API-Key, thumbnails included."""
    val = shared_path("data", "cuhk03", "val")
    imgs = sorted(val.glob("0005_0[5-6].jpg"))
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in imgs]
    assert httpx.post(server + "/gallery", files=files, data={"camera": "B"}, timeout=60).status_code == 401
    r = httpx.post(server + "/gallery", files=files, data={"camera": "B"}, timeout=60,
                   headers={"X-API-Key": "s3cret-key"})
    assert r.status_code == 201, r.text

    page = browser.new_page()
    page.goto(server + "/#gallery")
    page.wait_for_selector("#gallery-status.error")
    assert "401" in page.inner_text("#gallery-status") and "API key" in page.inner_text("#gallery-status")
    page.click(".apikey summary")
    page.fill("#api-key", "s3cret-key")
    page.click("#key-form button[type=submit]")
    assert page.evaluate("localStorage.getItem('reid.apiKey')") == "s3cret-key"
    page.click("#gallery-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#gallery li.card').length === 2")
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.naturalWidth > 0)",
                           timeout=10000)
    page.reload()  # the key survives a reload
    page.wait_for_function("document.querySelectorAll('#gallery li.card').length === 2")


def test_results_can_be_read_in_time_order(server: str, browser) -> None:
    """'By time' re-orders the same hits by when they were seen (undated last), each keeping its
    rank by score; 'best match first' restores the ranking. No new search is made."""
    val = shared_path("data", "cuhk03", "val")
    for cam, ts, names in [("hall", "2024-05-01T12:30:00Z", ["0005_05.jpg", "0030_05.jpg"]),
                           ("door", "2024-05-01T12:10:00Z", ["0005_06.jpg"]),
                           ("yard", None, ["0010_05.jpg"]),
                           ("lift", "2024-05-01T12:20:00Z", ["0017_06.jpg"])]:  # times not in id order
        files = [("files", (n, (val / n).read_bytes(), "image/jpeg")) for n in names]
        r = httpx.post(server + "/gallery", files=files, data={"camera": cam, **({"timestamp": ts} if ts else {})},
                       timeout=60)
        assert r.status_code == 201, r.text

    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    assert page.locator("#order-label").is_hidden()  # nothing to order yet
    page.set_input_files("#query-files", str(val / QUERY))
    page.click("#search-btn")
    page.wait_for_function("document.querySelectorAll('#results li.card').length === 5", timeout=60000)

    def shown() -> list[tuple[str, str]]:
        cards = page.locator("#results li.card")
        return [(cards.nth(i).locator(".rank").inner_text(), cards.nth(i).locator(".cam").inner_text())
                for i in range(cards.count())]

    by_score = shown()
    assert [rank for rank, _ in by_score] == [f"#{i}" for i in range(1, 6)]
    page.select_option("#results-order", "time")
    by_time = shown()
    assert sorted(by_time) == sorted(by_score)  # the same hits, ranks kept
    cams = [cam.removeprefix("camera ") for _, cam in by_time]
    assert cams[:2] == ["door", "lift"] and set(cams[2:4]) == {"hall"} and cams[4] == "yard", cams
    hall = [rank for rank, cam in by_time if cam == "camera hall"]
    assert hall == sorted(hall, key=lambda r: int(r[1:]))  # same time: by rank
    page.select_option("#results-order", "score")
    assert shown() == by_score

    # confirm the two best hits as the same person, then search with both: they are the query now
    assert page.locator("#marked-bar").is_hidden()
    cards = page.locator("#results li.card")
    ids = [cards.nth(i).get_attribute("data-id") for i in range(2)]
    for i in range(2):
        cards.nth(i).locator(".mark input").check()
    assert page.inner_text("#search-marked") == "Search with the 2 marked"
    page.click("#search-marked")
    page.wait_for_function(
        "document.querySelector('#search-status').textContent.includes('like the 2 marked items')", timeout=60000)
    assert page.locator("#results li.card").count() == 3
    assert not {page.locator("#results li.card").nth(i).get_attribute("data-id") for i in range(3)} & set(ids)
    page.click("#clear-marked")
    assert page.locator("#marked-bar").is_hidden()
    assert not errors, errors


def test_footage_upload_shows_live_job_progress(server: str, browser, tmp_path: Path) -> None:
    """A video dropped on the upload form becomes a job whose progress bar fills and ends in 'done';
    its tracklet appears in the gallery with its frames and where it came from."""
    import cv2

    src = shared_path("data", "footage", "intel", "one-by-one-person-detection.mp4")
    cap = cv2.VideoCapture(str(src))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 40)  # a person walks in shortly after
    ok, frame = cap.read()
    assert ok
    clip = tmp_path / "lobby.mp4"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, frame.shape[1::-1])
    for _ in range(60):
        out.write(frame)
        ok, frame = cap.read()
        assert ok
    out.release()
    cap.release()

    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/#upload")
    page.set_input_files("#upload-files", str(clip))
    page.fill("#upload-form input[name=camera]", "lobby")
    page.click("#upload-btn")
    page.wait_for_function(
        "document.querySelector('#upload-status').textContent.includes('started 1 footage job')")
    row = page.locator("#jobs li[data-job]").first
    row.wait_for()
    assert "lobby.mp4" in row.inner_text()
    page.wait_for_selector("#jobs li[data-job] .state-done", timeout=180000)
    row = page.locator("#jobs li[data-job]").first
    assert row.locator("progress").evaluate("p => p.value") == 100
    assert "indexed" in row.inner_text() and "tracklet" in row.inner_text()

    page.click("nav >> text=Gallery")
    page.wait_for_selector("#gallery li.card")
    card = page.locator("#gallery li.card").first
    assert "tracklet" in card.inner_text() and "lobby.mp4 · frames" in card.inner_text()
    card.locator("a.link").click()
    page.wait_for_selector("#detail[open] .frames img")
    page.wait_for_function(
        "[...document.querySelectorAll('#detail .frames img')].every(i => i.naturalWidth > 0)")
    assert "Frames in footage" in page.inner_text("#detail-body")
    page.wait_for_function("document.querySelector('#detail img.scene')?.naturalWidth === 640")  # where they were
    assert not errors, errors


def test_page_is_self_contained() -> None:
    """No CDN: every script/style/font the page loads comes from the app itself."""
    web = REPO / "reid" / "service" / "web"
    for name in ("index.html", "app.js", "style.css"):
        text = (web / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
