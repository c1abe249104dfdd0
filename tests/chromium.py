"""Render an HTML file in headless Chromium and read back what a reader would see.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON
messages separated by NUL bytes on file descriptors 3 and 4), with the standard library
only: no Selenium, no Playwright, no network socket.  :func:`render` loads a page, waits
for every image to decode, evaluates JavaScript expressions in it, records console
messages, uncaught exceptions, log entries (CSP violations, failed loads) and every
request that is not a ``data:`` or ``file:`` URL, and saves a full-page PNG screenshot.

Debian's ``chromium`` package provides the browser (``apt-get install -y chromium``;
``.ci/run`` installs it where it can).  :data:`CHROMIUM` is None without it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and os.path.exists(p)),
                None)

# Wait for every <img> to be decoded; report (alt, naturalWidth, naturalHeight) per image.
IMAGES_JS = """Promise.all([...document.images].map(img => img.decode()
    .then(() => [img.alt, img.naturalWidth, img.naturalHeight])
    .catch(() => [img.alt, 0, 0])))"""


def table_js(selector: str) -> str:
    """JavaScript returning the rows of a table's body: each row's ``data-key`` and its
    cells' text and ``data-*`` attributes."""
    return (f"[...document.querySelectorAll({json.dumps(selector + ' tbody tr')})].map(tr => "
            "({key: tr.dataset.key, cells: [...tr.cells].map(td => "
            "Object.assign({text: td.textContent}, td.dataset))}))")


@dataclass
class Rendered:
    """What the browser saw: ``values`` of the evaluated expressions by name, console
    ``errors`` (console.error, uncaught exceptions, error log entries), ``warnings``,
    ``requests`` that left the page (not ``data:``/``file:``), the ``screenshot``."""

    values: dict
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None


class _Pipe:
    """One Chromium process and its DevTools pipe."""

    def __init__(self, user_dir: str):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds():  # the pipe ends become fds 3 (commands in) and 4 (replies out)
            r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [CHROMIUM, "--headless", "--remote-debugging-pipe", "--no-sandbox",
                "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-sync",
                "--hide-scrollbars", "--mute-audio", f"--user-data-dir={user_dir}",
                "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, close_fds=False,
                                     preexec_fn=child_fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self.events: queue.Queue = queue.Queue()
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[-1] = {"error": {"message": "chromium closed the pipe"}}
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self.events.put(msg)

    def call(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        mid = self._next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies and -1 not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"chromium did not answer {method} in {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid, None) or self._replies[-1]
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        return reply["result"]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass


def _text(args: list[dict]) -> str:
    return " ".join(str(a.get("value", a.get("description", ""))) for a in args)


def render(html: str | Path, *, evaluate: dict[str, str], screenshot: str | Path | None = None,
           width: int = 1280, timeout: float = 60.0) -> Rendered:
    """Open the file ``html`` in headless Chromium and evaluate ``evaluate`` (name ->
    JavaScript expression; promises are awaited) once it has loaded.  Saves a full-page
    PNG to ``screenshot`` if given."""
    if CHROMIUM is None:
        raise FileNotFoundError("chromium is not installed (apt-get install -y chromium)")
    url = Path(html).resolve().as_uri()
    with tempfile.TemporaryDirectory() as user_dir:
        pipe = _Pipe(user_dir)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target,
                                                          "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": 900, "deviceScaleFactor": 1,
                       "mobile": False}, session=session)
            out = Rendered(values={})
            pipe.call("Page.navigate", {"url": url}, session=session)
            deadline = time.monotonic() + timeout
            loaded = False
            while not loaded:
                try:
                    ev = pipe.events.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    raise TimeoutError(f"{url} did not load in {timeout} s") from None
                loaded = ev.get("method") == "Page.loadEventFired"
                _record(ev, out)
            for name, expr in evaluate.items():
                res = pipe.call("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                                     "awaitPromise": True}, session=session,
                                timeout=timeout)
                if "exceptionDetails" in res:
                    raise RuntimeError(f"evaluating {name!r} failed: "
                                       f"{res['exceptionDetails'].get('text')}")
                out.values[name] = res["result"].get("value")
            if screenshot is not None:
                size = pipe.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
                shot = pipe.call("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": width,
                             "height": min(int(size["height"]) + 1, 16000), "scale": 1}},
                    session=session, timeout=timeout)
                out.screenshot = Path(screenshot)
                out.screenshot.parent.mkdir(parents=True, exist_ok=True)
                out.screenshot.write_bytes(base64.b64decode(shot["data"]))
            time.sleep(0.2)  # late console messages
            while True:
                try:
                    _record(pipe.events.get_nowait(), out)
                except queue.Empty:
                    break
            return out
        finally:
            pipe.close()


def _record(ev: dict, out: Rendered) -> None:
    method, p = ev.get("method"), ev.get("params", {})
    if method == "Runtime.consoleAPICalled":
        text = f"console.{p.get('type')}: {_text(p.get('args', []))}"
        if p.get("type") in ("error", "assert"):
            out.errors.append(text)
        elif p.get("type") == "warning":
            out.warnings.append(text)
    elif method == "Runtime.exceptionThrown":
        d = p.get("exceptionDetails", {})
        out.errors.append(f"uncaught: {d.get('text')} "
                          f"{d.get('exception', {}).get('description', '')}")
    elif method == "Log.entryAdded":
        e = p.get("entry", {})
        text = f"{e.get('source')}: {e.get('text')} {e.get('url', '')}"
        (out.errors if e.get("level") == "error" else out.warnings).append(text)
    elif method == "Network.requestWillBeSent":
        u = p.get("request", {}).get("url", "")
        if not u.startswith(("data:", "file:")):
            out.requests.append(u)
