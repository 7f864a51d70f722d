"""`carpool-tui serve` in a real headless Chromium: the page shows the health strip.

The browser is Debian's chromium, driven over the DevTools protocol with
aiohttp (which textual-serve already needs). It may only reach 127.0.0.1:
every host name resolves to nothing, so nothing the page asks for can leave
the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import textual_serve
from test_check import cli, isolated_env, run_jobs, seed

from carpool_tui.cli import _without_web_fonts

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REQUIRE_BROWSER = "CARPOOL_REQUIRE_BROWSER"
"""Set (as CI sets it): a missing Chromium fails the browser test, never skips it."""
START_TIMEOUT_S = 30.0
SCREEN_TIMEOUT_S = 60.0

# Runs before the page's own scripts: keeps every xterm.js Terminal the page
# opens, so the test can read the characters on screen (the terminal draws on
# a canvas, so they are not in the DOM).
CAPTURE_TERMINALS = """
(() => {
  const modules = [];
  const define = Object.defineProperty;
  Object.defineProperty = function (target, key, descriptor) {
    if (key === "__esModule") modules.push(target);
    return define.call(Object, target, key, descriptor);
  };
  window.__terminals = [];
  window.addEventListener("load", () => {
    for (const exported of modules) {
      const cls = exported && exported.Terminal;
      if (typeof cls !== "function" || !cls.prototype.open) continue;
      const open = cls.prototype.open;
      cls.prototype.open = function (...args) {
        window.__terminals.push(this);
        return open.apply(this, args);
      };
    }
  });
  window.__screenText = () => window.__terminals
    .filter((t) => t.buffer && t.buffer.active && t.buffer.active.getLine)
    .map((t) => {
      const buffer = t.buffer.active;
      const rows = [];
      for (let y = 0; y < t.rows; y++) {
        const line = buffer.getLine(buffer.viewportY + y);
        rows.push(line ? line.translateToString(true) : "");
      }
      return rows.join("\\n");
    })
    .join("\\n");
})();
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children(pid: int) -> list[int]:
    """The process ids below ``pid``, from /proc."""
    found: list[int] = []
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return found
    for child in (int(p) for p in text.split()):
        found.append(child)
        found.extend(children(child))
    return found


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process this test started, then any of its children left behind."""
    below = children(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited early:\n{log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"nothing listened on 127.0.0.1:{port}:\n{log.read_text()}")


def need_chromium(path: str) -> None:
    """Skip the browser test where Chromium is missing, saying how to install
    it; fail it instead where CARPOOL_REQUIRE_BROWSER is set."""
    if Path(path).exists():
        return
    missing = f"Chromium is not installed at {path} (apt-get install chromium)"
    if os.environ.get(REQUIRE_BROWSER):
        pytest.fail(f"{missing}, and {REQUIRE_BROWSER} requires it")
    pytest.skip(f"{missing}: the browser test of serve needs it")


def test_a_missing_chromium_skips_with_advice_or_fails_where_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(REQUIRE_BROWSER, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        need_chromium("/nonexistent/chromium")
    monkeypatch.setenv(REQUIRE_BROWSER, "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_BROWSER requires it"):
        need_chromium("/nonexistent/chromium")
    need_chromium(sys.executable)  # there: nothing to say


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[int]:
    """A headless Chromium with a fresh profile; yields its DevTools port.

    Without Chromium the test is skipped, saying how to install it, unless
    CARPOOL_REQUIRE_BROWSER is set: then it fails.
    """
    need_chromium(CHROMIUM)
    profile = tmp_path / "chromium-profile"
    log = (tmp_path / "chromium.log").open("wb")
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1400,1000",
            "about:blank",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (active.exists() and active.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not start: {CHROMIUM}")
            time.sleep(0.1)
        yield int(active.read_text().split()[0])
    finally:
        stop(process)
        log.close()


class Page:
    """One browser tab over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        await self.ws.send_str(
            json.dumps({"id": ident, "method": method, "params": params})
        )
        while True:
            message = json.loads(await self.ws.receive_str(timeout=30))
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        reply = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True
        )
        return reply["result"].get("value")


@contextlib.asynccontextmanager
async def open_page(devtools_port: int) -> AsyncIterator[Page]:
    base = f"http://127.0.0.1:{devtools_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/json/list") as reply:
            targets = await reply.json()
        page = next(t for t in targets if t["type"] == "page")
        async with session.ws_connect(
            page["webSocketDebuggerUrl"], max_msg_size=0
        ) as ws:
            yield Page(ws)


async def screen_text(page: Page, url: str, wanted: str) -> str:
    """Load ``url`` and return the terminal's text once it shows ``wanted``."""
    await page.send("Page.enable")
    await page.send("Page.addScriptToEvaluateOnNewDocument", source=CAPTURE_TERMINALS)
    await page.send("Page.navigate", url=url)
    deadline = time.monotonic() + SCREEN_TIMEOUT_S
    text = ""
    while time.monotonic() < deadline:
        text = await page.evaluate("window.__screenText ? window.__screenText() : ''")
        if text and wanted in text:
            return str(text)
        await asyncio.sleep(0.25)
    pytest.fail(f"{wanted!r} did not appear on the page; the screen:\n{text}")


async def test_the_browser_shows_the_health_strip(
    ops_dsn: str, tmp_path: Path, chromium: int
) -> None:
    await seed(ops_dsn, "seat_mismatch")
    env = isolated_env(tmp_path)
    run_jobs(env, ops_dsn, "check_system_invariants")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "carpool_tui",
                "serve",
                "--dsn",
                ops_dsn,
                "--port",
                str(port),
                "--refresh",
                "2",
            ],
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
    try:
        wait_for_port(port, server, log)
        url = f"http://127.0.0.1:{port}/"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            html = await response.text()
        assert "xterm.css" in html
        assert "fonts.googleapis.com" not in html
        async with open_page(chromium) as page:
            text = await screen_text(page, url, "unresolved violations")
        (tmp_path / "screen.txt").write_text(text)
        assert "seat mismatches" in text
        assert "READ-ONLY" in text
        assert "check_system_invariants" in text
    finally:
        stop(server)
    assert server.returncode is not None
    served = log.read_text()
    assert f"on http://127.0.0.1:{port}" in served
    assert "read-only" in served
    assert "not a loopback address" not in served


def test_a_public_address_warns_that_there_is_no_authentication(
    tmp_path: Path,
) -> None:
    """192.0.2.1 (a documentation address) is no address of this machine: the
    warning comes first, then one line saying the server cannot listen there."""
    done = cli(
        isolated_env(tmp_path),
        "serve",
        "--host",
        "192.0.2.1",
        "--port",
        str(free_port()),
        "--dsn",
        "postgresql://nobody@127.0.0.1:1/x",
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "192.0.2.1, which is not a loopback address" in lines[0]
    assert "textual-serve has no authentication" in lines[0]
    assert "Put it behind a proxy that authenticates." in lines[0]
    assert lines[-1].startswith("carpool-tui: Cannot listen on 192.0.2.1:")
    assert "Traceback" not in done.stderr


def test_the_served_page_links_no_font_host(tmp_path: Path) -> None:
    """The installed textual-serve page links Google's fonts; the copy served
    keeps everything else."""
    templates = Path(textual_serve.__file__).parent / "templates"
    shipped = (templates / "app_index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis.com" in shipped
    served = _without_web_fonts(templates, tmp_path)
    page = (served / "app_index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis.com" not in page
    assert page.count("\n") < shipped.count("\n")
    assert "xterm.css" in page and "textual.js" in page
