"""The web console at /ui in a real browser (Playwright driving Debian's Chromium) against
a real gateway serving the default models, used as a person would: sign in, read the
models, chat in the playground, manage keys, watch the metrics, export usage.

Set MODELPORT_CONSOLE_SCREENSHOTS=docs/img to rewrite the documentation's screenshots.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from support.browser import chromium
from support.models import CHAT, EMBED, default_models
from support.server import ModelportServer

MASTER = "mk-console-master-0123456789"
READER = "sk-console-reader-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
SHOTS = os.environ.get("MODELPORT_CONSOLE_SCREENSHOTS")
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("console")
    server = ModelportServer(
        {"server": {"master_key": "${E2E_MASTER}", "api_keys": [READER]},
         "models": default_models()},
        workdir, env={"E2E_MASTER": MASTER, "MODELPORT_DATA_DIR": str(workdir)})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as instance:
        yield instance


# Every API call the console made in this module: (method, path), for the check that
# each one is refused without the key.
CALLS: set[tuple[str, str]] = set()


def open_console(browser, gateway, **context_options):
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(30_000)

    def record(request) -> None:
        url = urlsplit(request.url)
        assert f"{url.scheme}://{url.netloc}" == gateway.url, f"left the gateway: {request.url}"
        if not url.path.startswith("/ui"):
            CALLS.add((request.method, url.path + (f"?{url.query}" if url.query else "")))

    page.on("request", record)
    page.goto(gateway.url + "/ui/")
    return page


@pytest.fixture
def page(browser, gateway):
    page = open_console(browser, gateway, viewport={"width": 1280, "height": 860})
    yield page
    page.context.close()


def sign_in(page, key: str = MASTER) -> None:
    page.get_by_label("Key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#nav").wait_for(state="visible")


def go(page, name: str) -> None:
    page.get_by_role("navigation").get_by_role("link", name=name).click()
    page.get_by_role("heading", level=1, name=name).wait_for()


def shot(page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)


def model_row(page, name: str):
    return page.locator(f'tr[data-model="{name}"]')


def test_a_wrong_master_key_shows_an_error_not_an_empty_page(page):
    sign_in_attempt = page.get_by_label("Key")
    sign_in_attempt.fill("mk-not-the-master-key")
    page.get_by_role("button", name="Sign in").click()
    error = page.locator("#login-error")
    error.wait_for(state="visible")
    assert "refused" in error.inner_text() and "incorrect master key" in error.inner_text()
    assert page.locator("#nav").is_hidden()
    shot(page, "login-error")


def test_signed_in_with_the_master_key_both_default_models_are_ready(page):
    sign_in(page)
    page.get_by_role("heading", level=1, name="Models").wait_for()
    for name in (CHAT, EMBED):
        model_row(page, name).locator(".badge", has_text="ready").wait_for()
    chat = model_row(page, CHAT)
    assert chat.locator("td").nth(1).inner_text() == "llamacpp"
    assert chat.locator("td").nth(2).inner_text() == "ready"
    # A ready model can be unloaded or restarted, not loaded again.
    unload = chat.get_by_role("button", name=f"Unload {CHAT}", exact=True)
    unload.wait_for()
    assert unload.is_enabled()
    assert chat.get_by_role("button", name=f"Load {CHAT}", exact=True).is_disabled()
    assert page.get_by_text("need a gateway with on-demand model control").is_hidden()
    # What the loaded models hold, per device, under the table.
    memory = page.locator("[data-memory=devices]")
    memory.filter(has_text="cpu:").wait_for()
    assert CHAT in memory.inner_text() and EMBED in memory.inner_text()
    shot(page, "models")


def test_unload_and_load_a_model_from_the_models_page(page, gateway):
    sign_in(page)
    row = model_row(page, EMBED)
    row.locator(".badge", has_text="ready").wait_for()
    pid_before = _pid(gateway, EMBED)
    assert pid_before is not None
    row.get_by_role("button", name=f"Unload {EMBED}", exact=True).click()
    row.locator(".badge", has_text="unloaded").wait_for(timeout=60_000)
    assert _pid(gateway, EMBED) is None
    load = row.get_by_role("button", name=f"Load {EMBED}", exact=True)
    load.wait_for()
    assert load.is_enabled()
    load.click()
    row.locator(".badge", has_text="ready").wait_for(timeout=120_000)
    pid_after = _pid(gateway, EMBED)
    assert pid_after is not None and pid_after != pid_before
    answer = httpx.post(gateway.url + "/v1/embeddings", headers=ADMIN, timeout=60,
                        json={"model": EMBED, "input": "back again"})
    assert answer.status_code == 200, answer.text


def _pid(gateway, name: str) -> int | None:
    state = httpx.get(f"{gateway.url}/admin/models/{name}", headers=ADMIN, timeout=10)
    assert state.status_code == 200, state.text
    return state.json()["pid"]


def test_the_models_page_follows_the_requests_in_flight(page, gateway):
    sign_in(page)
    in_flight = model_row(page, CHAT).locator("td").nth(3)
    in_flight.wait_for()
    # Two long streamed answers at once: the in-flight cell (refreshed every 2 s) shows them
    # while they run, and 0 once their clients have gone (the gateway stops them).
    seen = threading.Event()

    def long_answer() -> None:
        with httpx.stream("POST", gateway.base_url + "/chat/completions", headers=ADMIN,
                          timeout=120, json={
                              "model": CHAT, "max_tokens": 400, "ignore_eos": True,
                              "stream": True,
                              "messages": [{"role": "user", "content": "Tell a long story."}]},
                          ) as response:
            for _ in response.iter_lines():
                if seen.is_set():
                    return

    threads = [threading.Thread(target=long_answer) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        page.wait_for_function(
            "cell => Number(cell.textContent) >= 1", arg=in_flight.element_handle(),
            timeout=20_000)
    finally:
        seen.set()
        for thread in threads:
            thread.join(120)
    page.wait_for_function("cell => cell.textContent === '0'", arg=in_flight.element_handle(),
                           timeout=20_000)


def test_the_playground_streams_an_answer_with_its_speed_and_code(page):
    sign_in(page)
    go(page, "Playground")
    page.get_by_label("Model", exact=True).first.select_option(CHAT)
    page.get_by_label("Max tokens").fill("48")
    page.get_by_label("Temperature").fill("0")
    # Count the separate updates of the answer's text: a streamed answer arrives in pieces.
    page.evaluate("""() => {
        window.pieces = 0;
        new MutationObserver(() => { window.pieces += 1; }).observe(
            document.querySelector('.transcript'),
            {subtree: true, childList: true, characterData: true});
    }""")
    page.get_by_label("Message").fill("Write three sentences about the sea.")
    page.get_by_role("button", name="Send").click()
    answer = page.locator('.msg.assistant[data-streaming="false"]')
    answer.wait_for(timeout=90_000)
    assert len(answer.locator("p").first.inner_text().strip()) > 10
    assert page.evaluate("window.pieces") > 5
    stats = page.locator(".stats").inner_text()
    assert "TTFT" in stats and "tokens/s" in stats and "— tokens/s" not in stats
    page.get_by_text("The same request with curl").click()
    curl = page.locator("details pre").first.inner_text()
    assert "/v1/chat/completions" in curl and f'"model": "{CHAT}"' in curl
    assert '"max_tokens": 48' in curl and MASTER not in curl
    shot(page, "playground")


def test_the_playground_stops_a_stream(page):
    sign_in(page)
    go(page, "Playground")
    page.get_by_label("Model", exact=True).first.select_option(CHAT)
    page.get_by_label("Max tokens").fill("1500")
    # At temperature 0 this prompt gets the 135M model's longest answer (400+ tokens), so the
    # stream is still running when Stop is pressed; sampled answers are sometimes a few words.
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Message").fill("Tell a long story about a dragon.")
    page.get_by_role("button", name="Send").click()
    page.wait_for_function(
        "() => (document.querySelector('.msg.assistant p')?.textContent || '').length > 20",
        timeout=60_000)
    page.get_by_role("button", name="Stop").click()
    answer = page.locator('.msg.assistant[data-streaming="false"]')
    answer.wait_for(timeout=10_000)
    assert answer.get_by_text("Stopped.").is_visible()
    assert page.get_by_role("button", name="Send").is_enabled()


def test_the_embeddings_and_rerank_try_outs(page):
    sign_in(page)
    go(page, "Playground")
    page.get_by_role("button", name="Embed").click()
    page.get_by_text("2 vectors of 384 dimensions.").wait_for(timeout=60_000)
    assert page.get_by_text("Cosine similarity of the first two").is_visible()
    page.get_by_role("button", name="Rerank").click()
    ranked = page.get_by_role("region", name="Ranked documents").locator("tbody tr")
    ranked.first.wait_for(timeout=60_000)
    assert ranked.count() == 3
    assert ranked.first.locator("td").first.inner_text() == "Cats sleep on sofas."


def test_create_a_key_see_it_listed_edit_its_limits_and_revoke_it(page, gateway):
    sign_in(page)
    go(page, "Keys")
    page.get_by_label("Name").fill("console-e2e")
    page.get_by_label("Models").fill("smollm2")
    page.get_by_label("Requests per minute").fill("5")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("The new key's secret")
    secret.wait_for()
    value = secret.input_value()
    assert value.startswith("sk-mp-")
    shot(page, "keys")
    row = page.locator("tr", has_text="console-e2e")
    row.wait_for()
    assert CHAT in row.inner_text() and "5 rpm" in row.inner_text()
    assert httpx.get(gateway.base_url + "/models", headers={
        "Authorization": f"Bearer {value}"}).status_code == 200

    row.get_by_role("button", name="Edit limits of console-e2e").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Requests per minute").fill("7")
    dialog.get_by_label("Tokens per minute").fill("900")
    dialog.get_by_role("button", name="Save").click()
    page.get_by_text("Limits of “console-e2e” saved.").wait_for()
    key_id = row.get_attribute("data-key")
    stored = httpx.get(f"{gateway.url}/admin/keys/{key_id}", headers=ADMIN).json()
    assert (stored["rpm"], stored["tpm"]) == (7, 900)

    page.once("dialog", lambda confirm: confirm.accept())
    page.locator(f'tr[data-key="{key_id}"]').get_by_role(
        "button", name="Revoke console-e2e").click()
    page.locator(f'tr[data-key="{key_id}"] .badge', has_text="revoked").wait_for()
    refused = httpx.get(gateway.base_url + "/models", headers={"Authorization": f"Bearer {value}"})
    assert refused.status_code == 401


def test_metrics_charts_fill_with_data_after_a_few_requests(page, gateway):
    for _ in range(3):
        answer = httpx.post(gateway.base_url + "/chat/completions", headers=ADMIN, timeout=120,
                            json={"model": CHAT, "max_tokens": 8, "stream": True,
                                  "messages": [{"role": "user", "content": "Hi"}]})
        assert answer.status_code == 200
    sign_in(page)
    go(page, "Metrics")
    page.get_by_label("Model").select_option(CHAT)
    # A sample every 10 s: the requests show in the next one or two.
    for chart in ("requests_per_s", "tokens_per_s", "latency_p50_s", "ttft_p50_s"):
        page.wait_for_function(
            "chart => Number(document.querySelector(`figure[data-chart=${chart}] svg`)"
            "?.dataset.max) > 0", arg=chart, timeout=45_000)
    charts = page.locator("figure[data-chart]")
    assert charts.count() == 6
    assert int(page.locator("figure[data-chart=in_flight] svg").get_attribute("data-points")) >= 1
    shot(page, "metrics")


def test_usage_by_model_with_a_csv_export(page, gateway, tmp_path):
    httpx.post(gateway.base_url + "/embeddings", headers=ADMIN, timeout=60,
               json={"model": EMBED, "input": "usage row"}).raise_for_status()
    sign_in(page)
    go(page, "Usage")
    page.get_by_label("Group by").select_option("model")
    row = page.locator("tbody tr", has_text=EMBED)
    row.wait_for()
    assert page.locator("tr.total").is_visible()
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    saved = tmp_path / "usage.csv"
    download.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    embed = next(r for r in rows if r["model"] == EMBED)
    api = httpx.get(gateway.url + "/admin/usage?group_by=model", headers=ADMIN).json()["data"]
    expected = next(r for r in api if r["model"] == EMBED)
    assert int(embed["requests"]) == expected["requests"] >= 1
    assert int(embed["prompt_tokens"]) == expected["prompt_tokens"] > 0
    assert download.value.suggested_filename.startswith("modelport-usage-by-model-")
    shot(page, "usage")


def test_a_static_key_gets_the_read_only_views(page):
    sign_in(page, READER)
    model_row(page, CHAT).wait_for()
    assert page.get_by_text("Read-only: signed in with an API key").is_visible()
    nav = page.get_by_role("navigation")
    for hidden in ("Metrics", "Usage", "Keys"):
        assert nav.get_by_role("link", name=hidden).is_hidden()
    assert model_row(page, CHAT).get_by_role("button").count() == 0
    page.goto(page.url.split("#")[0] + "#/keys")  # an admin page asked for directly
    page.get_by_role("heading", level=1, name="Models").wait_for()
    go(page, "Playground")
    assert page.get_by_role("button", name="Send").is_enabled()


def test_phone_width_keyboard_and_themes(browser, gateway):
    page = open_console(browser, gateway, viewport=PHONE, device_scale_factor=2,
                        is_mobile=True, has_touch=True)
    try:
        # Keyboard only: the key field has the focus, Enter signs in.
        page.keyboard.type(MASTER)
        page.keyboard.press("Enter")
        page.locator("#nav").wait_for(state="visible")
        model_row(page, CHAT).wait_for()
        for name in ("Models", "Metrics", "Usage", "Keys", "Playground"):
            go(page, name)
            page.wait_for_timeout(300)
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} scrolls sideways on a phone ({overflow} px)"
        go(page, "Models")
        model_row(page, CHAT).locator(".badge", has_text="ready").wait_for()
        shot(page, "phone")

        # Tab from the top of a fresh page (still signed in for the tab's session): the skip
        # link first, with a visible focus ring, then the pages.
        page.reload()
        model_row(page, CHAT).wait_for()
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.className") == "skip"
        assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") \
            == "solid"
        page.keyboard.press("Enter")
        assert page.evaluate("() => document.activeElement.id") == "main"
        assert page.get_by_role("heading", level=1, name="Models").is_visible()
        page.locator(".skip").focus()
        for _ in range(6):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.textContent") == "Keys":
                break
        page.keyboard.press("Enter")
        page.get_by_role("heading", level=1, name="Keys").wait_for()
        assert page.evaluate("() => document.activeElement.tagName") == "H1"

        theme = page.locator("#theme")
        before = page.evaluate("() => document.documentElement.dataset.theme")
        light_background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        theme.focus()
        page.keyboard.press("Enter")
        after = page.evaluate("() => document.documentElement.dataset.theme")
        assert {before, after} == {"light", "dark"}
        assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") \
            != light_background
        page.reload()
        assert page.evaluate("() => document.documentElement.dataset.theme") == after
    finally:
        page.context.close()


def test_dark_theme_screenshot(browser, gateway):
    page = open_console(browser, gateway, viewport={"width": 1280, "height": 860},
                        color_scheme="dark")
    try:
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        sign_in(page)
        model_row(page, CHAT).locator(".badge", has_text="ready").wait_for()
        shot(page, "dark")
    finally:
        page.context.close()


def test_every_call_the_console_made_is_refused_without_the_key(gateway):
    """Run last: replays, without any key, each API call the tests above saw the page make."""
    paths = {path.split("?")[0] for _, path in CALLS}
    expected = {"/v1/models", "/admin/keys", "/admin/usage", "/admin/metrics/history",
                "/admin/models", "/v1/chat/completions", "/v1/embeddings"}
    assert expected <= paths, f"the console made none of {expected - paths} here"
    assert any(p.startswith("/admin/keys/") for p in paths)  # the PATCH and the DELETE
    for method, path in sorted(CALLS):
        body = {} if method in ("POST", "PATCH") else None
        refused = httpx.request(method, gateway.url + path, json=body, timeout=30)
        assert refused.status_code == 401, (method, path, refused.text)
        assert refused.json()["error"]["message"]
    for method, path in [("POST", f"/admin/models/{CHAT}/load"),
                         ("POST", f"/admin/models/{CHAT}/unload"), ("POST", "/v1/rerank")]:
        assert httpx.request(method, gateway.url + path, json={}).status_code == 401
