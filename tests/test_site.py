"""The documentation site in a real browser: build it (``mkdocs build --strict``), serve it on
127.0.0.1, load every page in headless Chromium through the Chrome DevTools protocol, and
fail on a broken internal link (a page that is not there, or an anchor no element has), an
image the browser could not load, or a page whose article renders (next to) empty.
Screenshots of the home page and a family page are saved under the test's tmp_path.

Chromium is the Debian package ``chromium`` (``.ci/run`` installs it); without it the test is
skipped, saying so. The DevTools client is a minimal WebSocket client on the standard
library (RFC 6455: masked text frames out, unmasked frames in), so nothing beyond the
``docs`` extra is needed.
"""
from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
MIN_TEXT = 200  # characters of rendered article text below which a page counts as empty


class _WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, client-masked."""

    def __init__(self, url: str, timeout: float = 60.0):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head[:80]

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            out += chunk
        return out

    def send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode in (0x9, 0xA):  # ping / pong: not part of a message
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()


class _DevTools:
    """One page target of a headless Chromium, driven by the DevTools protocol."""

    def __init__(self, ws: _WebSocket):
        self.ws, self.next_id, self.events = ws, 0, []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, e in enumerate(self.events):
                if e.get("method") == name:
                    del self.events[: i + 1]
                    return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(name)

    def evaluate(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def load(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")


# What each page reports once loaded: its article's text, the images that did not load,
# every link, and every element id (the anchors links may point at).
_PROBE = """(() => {
  const article = document.querySelector('article') || document.body;
  return {
    text: article.innerText.trim().length,
    title: document.title,
    broken_images: Array.from(document.images)
        .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  };
})()"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="MkDocs is not installed (the docs extra: pip install -e \".[docs]\")")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout}\n{r.stderr}"
    return out


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test's output is its findings, not the access log
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the browser dropping a request it no longer needs
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if BROWSER is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it): "
                    "the site is not checked in a browser")
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{BROWSER} did not start its DevTools endpoint (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        page = next(t for t in targets if t.get("type") == "page")
        tools = _DevTools(_WebSocket(page["webSocketDebuggerUrl"]))
        tools.call("Page.enable")
        tools.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        yield tools
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _page_url(base: str, page: pathlib.Path, site: pathlib.Path) -> str:
    return base + page.relative_to(site).as_posix()


def test_every_page_renders_with_its_links_and_images(browser, site, server, tmp_path):  # browser first: skip before building
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    assert len(pages) >= 20, [p.name for p in pages]
    seen: dict[str, dict] = {}
    problems = []
    for page in pages:
        url = _page_url(server, page, site)
        browser.load(url)
        info = browser.evaluate(_PROBE)
        seen[url] = info
        if info["text"] < MIN_TEXT:
            problems.append(f"{url}: renders (next to) empty ({info['text']} characters of text)")
        for src in info["broken_images"]:
            problems.append(f"{url}: image {src} did not load")
    # every internal link: the page exists on the server, and its anchor is an element's id
    status: dict[str, int] = {}
    for url, info in seen.items():
        for link in info["links"]:
            if not link.startswith(server):
                continue
            target, _, anchor = link.partition("#")
            if target not in status:
                try:
                    status[target] = urllib.request.urlopen(target, timeout=30).status
                except urllib.error.HTTPError as e:
                    status[target] = e.code
            if status[target] != 200:
                problems.append(f"{url}: link to {link} is broken (HTTP {status[target]})")
            elif anchor and target in seen and urllib.parse.unquote(anchor) not in seen[target]["ids"]:
                problems.append(f"{url}: link to {link}: no element with id {anchor!r} there")
    assert not problems, "\n".join(problems)

    # screenshots: the home page and a family page
    shots = []
    for name in ("index.html", "gmm.html"):
        browser.load(server + name)
        png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, f"{name}: the screenshot is blank"
        path = tmp_path / f"screenshot-{name.replace('.html', '')}.png"
        path.write_bytes(png)
        shots.append(path)
    print("\nscreenshots:", *shots, sep="\n  ")
