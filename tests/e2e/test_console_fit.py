"""The console's tables fit a laptop and a desktop screen (1280 and 1920 px wide) with
realistic content: three keys with every limit set, the models with their controls. No
table scrolls sideways, and every action button lies inside the window. Also: Enter sends
a playground message and Shift+Enter starts a new line."""

from __future__ import annotations

import httpx
import pytest

from support.browser import chromium
from support.models import CHAT, default_models
from support.server import ModelportServer

pytestmark = pytest.mark.e2e
MASTER = "mk-console-fit-master-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
KEYS = [("analytics-team-production", ["smollm2-135m-instruct", "all-minilm-l6-v2"]),
        ("customer-support-bot-staging", ["smollm2"]),
        ("data-science-notebooks-shared", None)]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("console-fit")
    server = ModelportServer({"server": {"master_key": MASTER}, "models": default_models()},
                             workdir, env={"MODELPORT_DATA_DIR": str(workdir)})
    server.start()
    for name, models in KEYS:
        body = {"name": name, "rpm": 1200, "tpm": 2_500_000, "max_parallel": 64,
                "budget_tokens": 150_000_000, "budget_period": "month",
                "expires_at": "2031-12-31T23:59:00Z"}
        if models:
            body["models"] = models
        made = httpx.post(server.url + "/admin/keys", json=body, headers=ADMIN, timeout=30)
        assert made.status_code in (200, 201), made.text
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as instance:
        yield instance


def signed_in(browser, gateway, width: int):
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    page.goto(gateway.url + "/ui/")
    page.get_by_label("Key").fill(MASTER)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#nav").wait_for(state="visible")
    return page


def go(page, name: str) -> None:
    page.get_by_role("navigation").get_by_role("link", name=name).click()
    page.get_by_role("heading", level=1, name=name).wait_for()


# For each table: whether it scrolls sideways, and each action button that is not wholly
# inside both the window and the table's visible box.
LAYOUT = """() => Array.from(document.querySelectorAll('.scroll')).map((box) => {
    const frame = box.getBoundingClientRect();
    const right = Math.min(frame.right, window.innerWidth);
    const cut = Array.from(box.querySelectorAll('.actions button')).filter((b) => {
        const r = b.getBoundingClientRect();
        return r.width === 0 || r.left < frame.left - 0.5 || r.right > right + 0.5;
    }).map((b) => b.getAttribute('aria-label'));
    return {label: box.getAttribute('aria-label'), buttons: box.querySelectorAll(
        '.actions button').length, scrolls: box.scrollWidth > box.clientWidth + 1, cut};
})"""


@pytest.mark.parametrize("width", [1280, 1920])
def test_every_tables_action_buttons_are_visible(browser, gateway, width):
    page = signed_in(browser, gateway, width)
    try:
        go(page, "Keys")
        for name, _ in KEYS:
            page.get_by_role("button", name=f"Revoke {name}", exact=True).wait_for()
        keys = page.evaluate(LAYOUT)
        assert [t["buttons"] for t in keys] == [6], keys  # Edit limits and Revoke, x3
        assert not any(t["scrolls"] or t["cut"] for t in keys), keys
        go(page, "Models")
        page.get_by_role("button", name=f"Unload {CHAT}", exact=True).wait_for()
        models = page.evaluate(LAYOUT)
        assert [t["buttons"] for t in models] == [6], models  # Load, Unload, Restart, x2
        assert not any(t["scrolls"] or t["cut"] for t in models), models
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    finally:
        page.context.close()


def test_enter_sends_and_shift_enter_starts_a_new_line(browser, gateway):
    page = signed_in(browser, gateway, 1280)
    try:
        go(page, "Playground")
        page.get_by_label("Model", exact=True).first.select_option(CHAT)
        page.get_by_label("Max tokens").fill("8")
        message = page.get_by_label("Message")
        message.click()
        message.type("first line")
        message.press("Shift+Enter")
        message.type("second line")
        assert message.input_value() == "first line\nsecond line"
        assert page.locator(".msg.user").count() == 0  # nothing sent yet
        message.press("Enter")
        sent = page.locator(".msg.user").last
        sent.wait_for()
        assert sent.locator("p").inner_text().strip() == "first line\nsecond line"
        page.locator('.msg.assistant[data-streaming="false"]').wait_for(timeout=90_000)
        assert message.input_value() == ""
    finally:
        page.context.close()
