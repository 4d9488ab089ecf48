"""The HTML run report in a real headless Chromium (Debian's `chromium`, driven by
Playwright): it loads with no console error and no network, shows every thread, its
elements answer clicks, and a screenshot is taken. The Jupyter displays
(`_repr_html_` of Kernel, RunResult and a Report) load in the same browser.

Skipped, with the reason, only where Chromium or Playwright is missing; `.ci/run`
installs both."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from l4sim import Kernel, Timeout
from l4sim.demo import run_demo
from l4sim.trace import Report, write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")

# A stable place for the screenshot of the demo's report, besides the test's tmp_path.
SCREENSHOT = Path(tempfile.gettempdir()) / "l4sim-report-demo.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


class Page:
    """A page with its console errors, uncaught exceptions and network requests."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "demo.html"
    assert run_demo(Console(record=True, width=120), html_path=path) == 0
    return path


def test_demo_report_loads_shows_every_thread_and_answers_clicks(
        browser: Any, demo_report: Path, tmp_path: Path) -> None:
    pg = Page(browser)
    page = pg.page
    page.goto(demo_report.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    assert pg.errors == []
    assert all(url.startswith(("file:", "data:", "about:")) for url in pg.requests), pg.requests

    data = page.evaluate("window.L4SIM")
    names = [t["name"] for t in data["threads"]]
    assert {"srv", "cli", "other", "ctl", "mbox", "sigma0", "anon-pager"} <= set(names)
    # every thread: a row in the table and a row of the timeline
    rows = page.locator("#threads tr.thread")
    assert rows.count() == len(names)
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(len(names))] == names
    axis = page.evaluate("window.l4simCharts.timeline.getOption().yAxis[0].data")
    assert axis == names
    assert page.evaluate("window.l4simCharts.timeline.getOption().dataZoom.length") == 2
    # the sequence diagram: an arrow per message, named by label and words
    assert page.locator(".seq-msg").count() == len(data["messages"])
    assert "call(6, 7)" in page.locator(".seqwrap").inner_text()

    # clicks: a message of the sequence diagram
    page.locator(".seq-msg").first.click()
    assert "message 1: call(6, 7)" in page.locator("#details").inner_text()
    assert page.locator(".seq-msg.selected").count() == 1
    # a thread of the table
    rows.nth(1).click()
    assert "thread cli" in page.locator("#details").inner_text()
    assert "selected" in (rows.nth(1).get_attribute("class") or "")
    # a bar of the timeline: a real mouse click on the canvas where ECharts drew it
    slice_ = max(data["slices"], key=lambda s: s[2] - s[1])
    x, y = page.evaluate(
        "(s) => { const c = window.l4simCharts.timeline;"
        " const p = c.convertToPixel({gridIndex: 0}, [(s[1] + s[2]) / 2, s[0]]);"
        " const r = document.getElementById('timeline').getBoundingClientRect();"
        " return [p[0] + r.left, p[1] + r.top]; }", slice_)
    page.locator("#timeline").scroll_into_view_if_needed()
    x, y = page.evaluate(
        "(s) => { const c = window.l4simCharts.timeline;"
        " const p = c.convertToPixel({gridIndex: 0}, [(s[1] + s[2]) / 2, s[0]]);"
        " const r = document.getElementById('timeline').getBoundingClientRect();"
        " return [p[0] + r.left, p[1] + r.top]; }", slice_)
    page.mouse.click(x, y)
    details = page.locator("#details").inner_text()
    assert f"{names[slice_[0]]}: {slice_[3]}" in details and "from (µs)" in details
    # the state machine highlights the transitions this run took
    edges = data["states"]["edges"]
    assert any(e["count"] for e in edges) and any(not e["count"] for e in edges)
    # the mapping database as a tree
    assert data["mapdb"]["children"][0]["name"].startswith("sigma0")
    assert pg.errors == []

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    shutil.copy(shot, SCREENSHOT)
    assert shot.stat().st_size > 50_000
    page.close()


def test_report_of_a_deadlock_shows_chain_and_traceback(browser: Any, tmp_path: Path) -> None:
    async def caller(t: Any, sel: list[int]) -> None:
        await t.call(sel[0], words=[1])

    async def crash(t: Any) -> None:
        await t.sleep(Timeout.us(2))
        raise ValueError("bad request")

    k = Kernel(trace=True)
    ta, tb = k.new_task("ta"), k.new_task("tb")
    sa: list[int] = [0]
    sb: list[int] = [0]
    a = ta.new_thread(caller, sa, name="a")
    b = tb.new_thread(caller, sb, name="b")
    sa[0], sb[0] = ta.add_cap(b), tb.add_cap(a)
    tb.new_thread(crash, name="crash")
    result = k.run()
    path = write_html(k, tmp_path / "dead.html", result)
    pg = Page(browser)
    pg.page.goto(path.as_uri())
    pg.page.wait_for_selector("body[data-ready='1']")
    assert pg.errors == []
    text = pg.page.locator("#result").inner_text()
    assert "deadlock" in text and "a → b → a" in text
    tb_text = pg.page.locator("pre.traceback").inner_text()
    assert __file__ in tb_text and 'raise ValueError("bad request")' in tb_text
    pg.page.close()


def _jupyter_page(browser: Any, snippet: str) -> Page:
    """Load an output cell's HTML as Jupyter would put it in a page; wait for the report
    inside its iframe."""
    pg = Page(browser)
    pg.page.set_content(f"<html><body><div class='output'>{snippet}</div></body></html>")
    frame = pg.page.frame_locator("iframe.l4sim-report")
    frame.locator("body[data-ready='1']").wait_for(timeout=20_000)
    return pg


def test_repr_html_of_kernel_result_and_report(browser: Any) -> None:
    async def ping(t: Any, sel: list[int]) -> int:
        r = await t.call(sel[0], words=[41])
        return r.words[0]

    async def pong(t: Any) -> None:
        r = await t.wait()
        await t.reply(words=[r.words[0] + 1])

    k = Kernel(trace=True)
    s = k.new_task("s").new_thread(pong, name="pong")
    c = k.new_task("c")
    sel = [c.add_cap(s)]
    c.new_thread(ping, sel, name="ping")
    result = k.run()
    for obj in (k, result, Report(k, result)):
        snippet = obj._repr_html_()
        assert snippet.startswith("<iframe")
        pg = _jupyter_page(browser, snippet)
        frame = pg.page.frame_locator("iframe.l4sim-report")
        assert frame.locator("#threads tr.thread").count() == 2
        assert "ping" in frame.locator("#threads").inner_text()
        frame.locator(".seq-msg").first.click()
        assert "call(41)" in frame.locator("#details").inner_text()
        assert pg.errors == [], (type(obj).__name__, pg.errors)
        pg.page.close()
