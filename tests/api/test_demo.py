"""``vlkit demo``: the page in headless Chromium answers as ``vlkit.load(DIR).vqa``; uploads that
are not images or too large are refused with a message; the server binds to 127.0.0.1."""
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from PIL import Image

import vlkit
from vlkit.api import export
from vlkit.api.demo import create_app

uvicorn = pytest.importorskip("uvicorn")
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def folder(vqa_run, tmp_path_factory):
    return export(vqa_run, tmp_path_factory.mktemp("demo") / "model")


@pytest.fixture(scope="module")
def server(folder):
    """The demo app on a free 127.0.0.1 port with a 20 kB upload limit, stopped after the tests."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(vlkit.load(folder), max_upload_bytes=20_000)
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not running.started and time.time() < deadline:
        time.sleep(0.05)
    assert running.started, "the demo server did not start"
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "scene.png"
    image = Image.new("RGB", (64, 64), "white")
    image.paste((220, 30, 30), (8, 8, 40, 40))
    image.save(path)
    return path


def post(url, fields, file_name, data, content_type):
    boundary = uuid.uuid4().hex
    body = b""
    for key, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{file_name}"\r\n'
             f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_uploads_that_are_not_images_or_too_large_are_refused(server, picture):
    question = {"question": "what colour?"}
    status, body = post(server + "/api/vqa", question, "notes.txt", b"hello", "text/plain")
    assert status == 400 and "not an image" in body["error"]
    status, body = post(server + "/api/vqa", question, "fake.png", b"not really a png", "image/png")
    assert status == 400 and "not a readable image" in body["error"]
    status, body = post(server + "/api/vqa", question, "big.png", b"\0" * 30_000, "image/png")
    assert status == 400 and "larger than 20 kB, the limit" in body["error"]
    status, body = post(server + "/api/vqa", question, "scene.png", picture.read_bytes(), "image/png")
    assert status == 200 and len(body["answers"]) == 5
    status, body = post(server + "/api/match", {"captions": "a red square"}, "scene.png", picture.read_bytes(), "image/png")
    assert status == 400 and "no itm_score head" in body["error"]


def test_alignment_map_is_a_png(server, picture):
    status, body = post(server + "/api/picture/align", {"text": "a red square"}, "scene.png", picture.read_bytes(), "image/png")
    assert status == 200 and body["png"].startswith("data:image/png;base64,")


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="no Chromium / chromedriver binary (Debian: apt-get install chromium chromium-driver; .ci/run does)")
def test_the_page_in_headless_chromium_answers_as_the_api(server, folder, picture):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        browser.get(server + "/")
        browser.find_element(By.ID, "image").send_keys(str(picture))
        question = browser.find_element(By.ID, "question")
        question.clear()
        question.send_keys("what colour is the square?")
        browser.find_element(By.ID, "ask").click()
        WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "answers").get_attribute("data-done") == "1")
        shown = [row.find_element(By.CLASS_NAME, "label").text for row in browser.find_elements(By.CSS_SELECTOR, "#answers .answer")]
    finally:
        browser.quit()
    expected = vlkit.load(folder).vqa([str(picture)], ["what colour is the square?"], top_k=5)[0]
    assert shown == [answer["answer"] for answer in expected]
