"""The playground at / and the offline /docs and /redoc: every page and asset is served by the app itself and
nothing served names an outside URL (an air-gapped cluster must get working pages)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api import ui
from app.main import create_app
from app.settings import Settings

EXTERNAL = re.compile(r"https?://", re.IGNORECASE)
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # an XML namespace name in favicon.svg, never fetched


class _Refs(HTMLParser):
    """Every src/href in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def refs(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    return parser.refs


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI(title="t", docs_url=None, redoc_url=None)
    ui.install(app)
    return TestClient(app)


def playground_files() -> list[Path]:
    return sorted(p for p in ui.PLAYGROUND_DIR.rglob("*") if p.is_file())


def test_playground_page_and_every_asset_it_names_are_served(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "recursolve" in r.text and 'id="solve"' in r.text
    names = refs(r.text) + re.findall(r'<script[^>]+src="([^"]+)"', r.text)
    local = [n for n in names if not n.endswith((".json",)) and n not in ("docs", "redoc")]
    assert {"ui/playground.css", "ui/js/app.js", "ui/favicon.svg"} <= set(local)
    for name in local:
        asset = client.get("/" + name)
        assert asset.status_code == 200, name
        assert len(asset.content) > 100, name


def test_js_modules_import_only_served_files(client):
    for path in ui.PLAYGROUND_DIR.joinpath("js").glob("*.js"):
        for target in re.findall(r'from\s+"(\./[^"]+)"', path.read_text()):
            assert client.get(f"/ui/js/{target[2:]}").status_code == 200, (path.name, target)


@pytest.mark.parametrize("path", playground_files(), ids=lambda p: p.name)
def test_no_playground_file_names_an_outside_url(client, path: Path):
    url = "/ui/" + path.relative_to(ui.PLAYGROUND_DIR).as_posix()
    r = client.get(url)
    assert r.status_code == 200, url
    text = r.text.replace(SVG_NAMESPACE, "") if path.suffix == ".svg" else r.text
    assert not EXTERNAL.findall(text), f"{url} names an outside URL"


def test_served_types(client):
    assert client.get("/ui/playground.css").headers["content-type"].startswith("text/css")
    assert "javascript" in client.get("/ui/js/app.js").headers["content-type"]


@pytest.mark.parametrize("page, assets", [
    ("/docs", ["/ui/vendor/swagger-ui-bundle.js", "/ui/vendor/swagger-ui.css"]),
    ("/redoc", ["/ui/vendor/redoc.standalone.js"]),
])
def test_docs_pages_load_their_bundles_from_this_server(client, page, assets):
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not EXTERNAL.findall(r.text), r.text  # no CDN script, no Google Fonts, no remote favicon
    assert set(assets) <= set(refs(r.text))
    assert "/openapi.json" in r.text
    for asset in [*assets, "/ui/favicon.svg"]:
        got = client.get(asset)
        assert got.status_code == 200, asset
    assert len(client.get(assets[0]).content) > 500_000  # the real bundle, not a stub


@pytest.mark.parametrize("page", ["/", "/docs", "/redoc"])
def test_pages_forbid_requests_off_this_server(client, page):
    csp = client.get(page).headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "img-src 'self' data:" in csp
    assert not EXTERNAL.findall(csp)


def test_swagger_ui_sends_the_spec_to_no_validator(client):
    assert '"validatorUrl": null' in client.get("/docs").text


def test_oauth2_redirect_page(client):
    r = client.get("/docs/oauth2-redirect")
    assert r.status_code == 200 and "oauth2" in r.text.lower()


def test_root_path_prefixes_the_asset_urls():
    app = FastAPI(docs_url=None, redoc_url=None)
    ui.install(app)
    page = TestClient(app, root_path="/solver").get("/docs").text
    assert "/solver/ui/vendor/swagger-ui-bundle.js" in page and "/solver/openapi.json" in page


def test_pages_stay_out_of_the_openapi_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc", "/docs/oauth2-redirect"} & set(paths)


def test_install_refuses_an_app_with_fastapis_cdn_docs():
    with pytest.raises(ValueError, match="docs_url=None"):
        ui.install(FastAPI())


def test_create_app_serves_the_playground_and_offline_docs(tmp_path):
    client = TestClient(create_app(Settings(weights_dir=tmp_path), []))  # no lifespan: nothing loads
    assert 'id="solve"' in client.get("/").text
    docs = client.get("/docs").text
    assert "/ui/vendor/swagger-ui-bundle.js" in docs and not EXTERNAL.findall(docs)
    assert client.get("/redoc").status_code == 200
    assert "/v1/solve/stream" in client.get("/openapi.json").json()["paths"]
