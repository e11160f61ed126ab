"""A report opened in a real browser: headless Chromium says what a reader would see go wrong.

``check(report.html)`` loads the page in headless Chromium and returns the
console errors and uncaught exceptions, the images that did not decode, and any
raw Markdown left in the visible text (backticks, ``**``, bullets, ``](``,
table pipes), optionally with the value of a JavaScript expression (a test
clicks a header and reads the sorted column) and a PNG screenshot. Nothing
beyond the standard library: the DevTools protocol over a pipe
(``--remote-debugging-pipe``: commands on the browser's fd 3, replies and events
on its fd 4, each a JSON message ending in NUL).

``python -m harness.report_browser REPORT.html [--screenshot PNG]`` prints the
result and exits 1 when the page has a problem (the tests and CI use it through
``check``). The browser is ``chromium`` (Debian package ``chromium``) or Chrome
on the PATH, or the path in ``LLMBENCH_CHROMIUM``.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WIDTH = 1280
TIMEOUT_S = 60.0

PAGE_CHECKS = r"""(() => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40));
  const text = document.body.innerText;
  const patterns = {"backticks": /`[^`\n]+`/, "bold": /\*\*[^*\n]+\*\*/, "bullet": /^[ \t]*[-*+] \S/m,
                    "heading": /^#{1,6} \S/m, "link": /\]\([^)\s]*\)/, "table": /^\|.*\|[ \t]*$/m, "image": /!\[/};
  const raw = Object.entries(patterns).filter(([, re]) => re.test(text))
    .map(([name, re]) => name + ": " + JSON.stringify(text.match(re)[0].slice(0, 60)));
  return {images: images.length, broken, raw, tables: document.querySelectorAll("table").length,
          height: document.documentElement.scrollHeight};
})()"""


class BrowserError(RuntimeError):
    """The browser could not be started or stopped answering."""


def find_browser() -> str | None:
    """The Chromium (or Chrome) to use, or None when there is none."""
    chosen = os.environ.get("LLMBENCH_CHROMIUM")
    if chosen:
        return chosen if shutil.which(chosen) or Path(chosen).is_file() else None
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def _high(fd: int) -> int:
    """A copy of ``fd`` numbered 10 or more (so the shell can put the pipe ends on 3 and 4 safely)."""
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return copy


class _Session:
    """One headless browser, spoken to over the DevTools pipe."""

    def __init__(self, browser: str, profile: str):
        to_browser_r, self._to_browser = map(_high, os.pipe())
        self._from_browser, from_browser_w = map(_high, os.pipe())
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", f"--window-size={WIDTH},900"]
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}', browser, *args],
            pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError("the browser did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace").strip().splitlines() if self.proc.stderr else []
                raise BrowserError(f"the browser exited: {err[-1] if err else 'no message'}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = TIMEOUT_S) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        if self.proc.stderr:
            self.proc.stderr.close()


def _console_errors(events: list[dict]) -> list[str]:
    errors = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append("exception: " + (details.get("exception", {}).get("description") or details.get("text", "")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                 for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"log: {entry.get('text')} {entry.get('url') or ''}".strip())
    return errors


def check(page: Path, screenshot: Path | None = None, script: str | None = None,
          screenshot_height: int = 2400, browser: str | None = None) -> dict:
    """Load ``page`` in headless Chromium: ``errors`` (console errors, exceptions), ``images`` and
    ``broken`` (images that did not decode), ``raw`` (raw Markdown found in the visible text), ``tables``,
    ``value`` (``script``'s result, when given); writes the top ``screenshot_height`` pixels of the page
    to ``screenshot`` as PNG when asked. Raises ``BrowserError`` when there is no browser or it fails."""
    browser = browser or find_browser()
    if not browser:
        raise BrowserError("no Chromium found: install the Debian package `chromium` (or set LLMBENCH_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="llmbench-chromium-") as profile:
        s = _Session(browser, profile)
        try:
            target = s.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            sid = s.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                s.send(f"{domain}.enable", session=sid)
            s.send("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": 900, "deviceScaleFactor": 1,
                                                          "mobile": False}, session=sid)
            s.events.clear()
            s.send("Page.navigate", {"url": Path(page).resolve().as_uri()}, session=sid)
            s.wait_for("Page.loadEventFired")
            result = s.send("Runtime.evaluate", {"expression": PAGE_CHECKS, "returnByValue": True},
                            session=sid)["result"]["value"]
            if script:
                reply = s.send("Runtime.evaluate", {"expression": script, "returnByValue": True,
                                                    "awaitPromise": True}, session=sid)
                result["value"] = reply["result"].get("value")
                if "exceptionDetails" in reply:
                    result["value_error"] = reply["exceptionDetails"].get("text")
            if screenshot is not None:
                height = min(result["height"], screenshot_height)
                shot = s.send("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}}, session=sid)
                Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            time.sleep(0.2)  # late console messages (errors of scripts run on load) arrive as events
            s.send("Runtime.evaluate", {"expression": "1"}, session=sid)
            result["errors"] = _console_errors(s.events)
            return result
        finally:
            s.close()


def problems(result: dict) -> list[str]:
    """What a ``check`` result says is wrong, one line each."""
    return ([*result["errors"]] + [f"image did not decode: {b}" for b in result["broken"]]
            + [f"raw Markdown in the text: {r}" for r in result["raw"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report_browser",
                                     description="Open a report in headless Chromium and list what is wrong.")
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path, help="write a PNG of the top of the page here")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"report_browser: no such file {args.page}", file=sys.stderr)
        return 2
    try:
        result = check(args.page, args.screenshot)
    except BrowserError as exc:
        print(f"report_browser: {exc}", file=sys.stderr)
        return 2
    found = problems(result)
    print(f"{args.page}: {result['images']} images, {result['tables']} tables, "
          + ("no problems" if not found else f"{len(found)} problem(s)"))
    for line in found:
        print(f"  {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
