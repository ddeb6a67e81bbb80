"""The console's files at /ui: shipped in the package, served with a policy that keeps the
page to its own origin, and no data in them."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from starlette.testclient import TestClient

from modelport.api.app import build_app
from modelport.config import parse_config
from modelport.gateway.build import build_state


@pytest.fixture(scope="module")
def client():
    state = build_state(parse_config({"models": [
        {"name": "chat-a", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}]}))
    return TestClient(build_app(state))


def test_ui_serves_the_page_and_its_files(client):
    redirect = client.get("/ui", follow_redirects=False)
    assert redirect.status_code in (301, 307) and redirect.headers["location"].endswith("/ui/")
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    referenced = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert "app.js" in referenced and "style.css" in referenced
    for name in referenced:
        if name.startswith("data:"):
            continue
        assert client.get(f"/ui/{name}").status_code == 200, name


def test_every_module_the_page_imports_is_shipped(client):
    folder = resources.files("modelport") / "console"
    scripts = {entry.name: entry.read_text() for entry in folder.iterdir()
               if entry.name.endswith(".js")}
    for name, text in scripts.items():
        for imported in re.findall(r'from "\./([^"]+)"', text):
            assert imported in scripts, f"{name} imports {imported}, which is not shipped"
        # Nothing from another origin: every request the page makes stays on the gateway.
        # (The SVG namespace is a name, not an address.)
        addresses = re.findall(r'["\'`](https?://[^"\'`]*)', text)
        assert set(addresses) <= {"http://www.w3.org/2000/svg"}, name
        assert client.get(f"/ui/{name}").headers["content-type"].startswith(
            ("text/javascript", "application/javascript"))


def test_an_unknown_file_is_a_404_in_the_error_envelope(client):
    missing = client.get("/ui/nope.js")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
