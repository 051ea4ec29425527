"""Access and contract: API keys, CORS, JSON-only bodies, strict option types, one error body for every error
(400 included), no absolute paths and no long echoes in responses."""

from __future__ import annotations

import gzip

import httpx
import orjson
import pytest
import pytest_asyncio

from app.api.auth import bearer_token, key_matches, parse_keys
from app.api.redact import clip, redact_paths
from app.main import create_app
from app.settings import ModelSpec, Settings
from app_engine_support import PUZZLE, make_specs, running_app, solve_body

module_loop = pytest.mark.asyncio(loop_scope="module")
KEYS = "k-one, k-two"


def test_key_helpers():
    assert parse_keys(KEYS) == ("k-one", "k-two") and parse_keys("") == () and parse_keys(None) == ()
    assert bearer_token([(b"authorization", b"bearer  k-one ")]) == "k-one"
    assert bearer_token([(b"authorization", b"Basic abc")]) is None
    assert bearer_token([(b"authorization", b"Bearer ")]) is None
    assert key_matches("k-two", ("k-one", "k-two")) and not key_matches("k-tw", ("k-one", "k-two"))


def test_redaction_and_clipping(tmp_path):
    weights = tmp_path / "weights"
    msg = f"FileNotFoundError: no such checkpoint: {weights}/trm (also tried /opt/secret/dir/model.bin)"
    assert redact_paths(msg, weights) == "FileNotFoundError: no such checkpoint: trm (also tried model.bin)"
    assert redact_paths("see http://host/a/b and a/b/c") == "see http://host/a/b and a/b/c"
    assert clip("x" * 65) == "x" * 64 + "…" and clip("short") == "short"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("access")
    settings = Settings(weights_dir=root, api_keys=KEYS, cors_origins="https://app.example")
    async with running_app(root, settings=settings, specs=make_specs(root)) as (_, c):
        yield c


AUTH = {"Authorization": "Bearer k-two"}


@module_loop
async def test_v1_needs_a_key(client):
    r = await client.post("/v1/solve", json=solve_body())
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["code"] == "unauthorized"
    r = await client.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert (await client.post("/mcp", json={}, headers={"Authorization": "Basic k-one"})).status_code == 401
    r = await client.post("/v1/solve", json=solve_body(max_steps=2), headers=AUTH)
    assert r.status_code == 200, r.text


@module_loop
async def test_probes_docs_and_metrics_stay_open(client):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/v2/health/live"):
        assert (await client.get(path)).status_code == 200, path


@module_loop
async def test_head_is_the_get_without_its_body(client):
    """Load balancers and `curl -I` probe with HEAD: the GET's status and headers, no body, the same guards."""
    for path, headers in (("/healthz", {}), ("/openapi.json", {}), ("/v1/models", AUTH), ("/", {}),
                          ("/ui/js/app.js", {})):
        get, head = await client.get(path, headers=headers), await client.head(path, headers=headers)
        assert get.status_code == head.status_code == 200, path
        assert head.content == b"" and get.content, path
        assert head.headers["content-type"] == get.headers["content-type"], path
        assert int(head.headers["content-length"]) == len(get.content), path
    r = await client.head("/v1/models")  # the key is needed as for GET
    assert r.status_code == 401 and r.content == b""
    r = await client.head("/v1/solve", headers=AUTH)  # no GET here: the path's 405 and what it allows
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.content == b""


@module_loop
async def test_a_wrong_method_is_told_what_the_path_takes(client):
    """405 names the method and the path, and Allow (and the message) list HEAD wherever GET is served."""
    r = await client.put("/v1/models", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert r.json()["error"]["message"] == "PUT is not allowed on /v1/models; use GET, HEAD"
    r = await client.get("/v1/solve", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["message"] == "GET is not allowed on /v1/solve; use POST"


@module_loop
async def test_cors_only_for_the_configured_origin(client):
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"}
    r = await client.options("/v1/solve", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = await client.options("/v1/solve", headers={**pre, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = await client.get("/v1/models", headers={**AUTH, "Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"


async def test_auth_and_cors_are_off_by_default(tmp_path):
    async with running_app(tmp_path, specs=make_specs(tmp_path)) as (_, c):
        r = await c.post("/v1/solve", json=solve_body(max_steps=1), headers={"Origin": "https://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        r = await c.options("/v1/solve", headers={"Origin": "https://evil.example",
                                                  "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers


async def test_metrics_can_need_a_key(tmp_path):
    async with running_app(tmp_path, settings=Settings(weights_dir=tmp_path, api_keys="k", auth_metrics=True),
                           specs=make_specs(tmp_path)) as (_, c):
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers={"Authorization": "Bearer k"})).status_code == 200
        assert (await c.get("/healthz")).status_code == 200


async def test_a_root_path_does_not_open_the_api(tmp_path):
    """Behind a proxy prefix (uvicorn --root-path /solver) the path is /solver/v1/solve: the key is still needed,
    and the probes still pass the in-flight guard (every guard reads the path the routes match)."""
    async with running_app(tmp_path, settings=Settings(weights_dir=tmp_path, api_keys="k"),
                           specs=make_specs(tmp_path)) as (app, _):
        transport = httpx.ASGITransport(app=app, root_path="/solver")
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.post("/solver/v1/solve", json=solve_body(max_steps=1))
            assert r.status_code == 401, r.text
            r = await c.post("/solver/v1/solve", json=solve_body(max_steps=1), headers={"Authorization": "Bearer k"})
            assert r.status_code == 200, r.text
            assert (await c.get("/solver/healthz")).status_code == 200


@module_loop
@pytest.mark.parametrize(("content_type", "body"), [
    (None, b'{"task": "sudoku", "puzzle": "x"}'),
    ("text/plain", b'{"task": "sudoku", "puzzle": "x"}'),  # a CORS "simple request" any page can send
    ("application/x-www-form-urlencoded", b"task=sudoku"),
    ("multipart/form-data; boundary=x", b"--x--"),
])
async def test_post_bodies_must_be_json(client, content_type, body):
    headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
    r = await client.post("/v1/solve", content=body, headers=headers)
    assert r.status_code == 415, r.text
    err = r.json()["error"]
    assert err == {"code": "unsupported_media_type", "location": "header Content-Type",
                   "message": err["message"], "request_id": r.headers["X-Request-ID"]}


@module_loop
async def test_compressed_bodies_are_refused_as_such(client):
    """Nothing decodes a compressed body: a gzip one got a 400 about UTF-8, a plain one labelled gzip a 200."""
    plain = orjson.dumps(solve_body(max_steps=1))
    for body, encoding in ((gzip.compress(plain), "gzip"), (plain, "gzip"), (plain, "br")):
        r = await client.post("/v1/solve", content=body, headers={**AUTH, "Content-Type": "application/json",
                                                                  "Content-Encoding": encoding})
        assert r.status_code == 415, r.text
        assert r.json()["error"]["location"] == "header Content-Encoding" and encoding in r.json()["error"]["message"]
    r = await client.post("/v1/solve", content=plain, headers={**AUTH, "Content-Type": "application/json",
                                                               "Content-Encoding": "identity"})
    assert r.status_code == 200, r.text


@module_loop
async def test_transfer_codings_besides_chunked_are_refused(client):
    """`Transfer-Encoding: gzip, chunked` reached the route as a plain body (the parser de-chunks and ignores the
    rest): 501, as RFC 9112 asks for a coding the server does not understand."""
    plain = orjson.dumps(solve_body(max_steps=1))
    json_headers = {**AUTH, "Content-Type": "application/json"}
    for coding in ("gzip, chunked", "deflate,chunked", "GZIP , Chunked"):
        r = await client.post("/v1/solve", content=plain, headers={**json_headers, "Transfer-Encoding": coding})
        assert r.status_code == 501, r.text
        assert r.json()["error"]["location"] == "header Transfer-Encoding" and coding in r.json()["error"]["message"]
    for coding in ("chunked", "Chunked", "identity, chunked"):
        r = await client.post("/v1/solve", content=plain, headers={**json_headers, "Transfer-Encoding": coding})
        assert r.status_code == 200, (coding, r.text)


@module_loop
async def test_json_media_types_with_parameters_are_accepted(client):
    for ct in ("application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"):
        r = await client.post("/v1/solve", json=solve_body(max_steps=1), headers={**AUTH, "Content-Type": ct})
        assert r.status_code == 200, (ct, r.text)


@module_loop
@pytest.mark.parametrize(("options", "location"), [
    ({"max_steps": True}, "options.max_steps"),
    ({"max_steps": "10"}, "options.max_steps"),
    ({"max_steps": 10.0}, "options.max_steps"),
    ({"trajectories": False}, "options.trajectories"),
    ({"noise": "0.3"}, "options.noise"),
    ({"cache": 1}, "options.cache"),
    ({"cache": "false"}, "options.cache"),
    ({"seed": "7"}, "options.seed"),
])
async def test_strict_option_types(client, options, location):
    r = await client.post("/v1/solve", json=solve_body(**options), headers=AUTH)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["location"] == location


@module_loop
async def test_strict_batch_options_too(client):
    r = await client.post("/v1/solve/batch", headers=AUTH, json={"items": [solve_body(max_steps=True)]})
    assert r.status_code == 200 and r.json()["results"][0]["status"] == 422
    r = await client.post("/v1/solve/batch", headers=AUTH, json={"items": [solve_body()], "options": {"seed": "1"}})
    assert r.status_code == 422 and r.json()["error"]["location"] == "options.seed"


@module_loop
async def test_every_error_is_the_one_body(client):
    r = await client.post("/v1/solve", content=b'\xff\xfe{"task": 1}', headers={**AUTH,
                                                                             "Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "invalid_body", "location": "body", "request_id": r.headers["X-Request-ID"],
                                  "message": "the request body could not be read: send JSON text encoded as UTF-8"}}
    # JSON that parses into what Python will not hold: said as such, not as an encoding problem.
    deep, long_int = b"[" * 5000 + b"]" * 5000, b'{"task": ' + b"9" * 5000 + b"}"
    for raw, said in ((deep, "nested too deeply"), (long_int, "integer too long")):
        r = await client.post("/v1/solve", content=raw, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_body", r.text
        assert said in r.json()["error"]["message"]
    r = await client.post("/v1/solve", json={"task": "sudoku", "puzzle": None}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["location"] == "puzzle"
    assert "must not be null" in r.json()["error"]["message"]
    r = await client.post("/v1/solve", json={"task": None, "model": "random", "puzzle": PUZZLE,
                                             "options": {"max_steps": 1}}, headers=AUTH)
    assert r.status_code == 200, r.text  # task and model may be null (absent), as the schema says
    for r in (await client.get("/nope"), await client.delete("/v1/solve", headers=AUTH)):
        assert set(r.json()) == {"error"} and {"code", "message"} <= set(r.json()["error"])


@module_loop
async def test_echoed_names_are_cut_short(client):
    long = "m" * 10_000
    r = await client.get(f"/v1/models/{long}", headers=AUTH)
    assert r.status_code == 404 and len(r.text) < 400 and "m" * 64 + "…" in r.text
    r = await client.post("/v1/solve", json=solve_body(model=long), headers=AUTH)
    assert r.status_code == 422 and len(r.text) < 400 and r.json()["error"]["location"] == "model"
    r = await client.post("/v1/solve", json={**solve_body(), "x" * 10_000: 1}, headers=AUTH)
    assert r.status_code == 422 and len(r.text) < 400
    r = await client.post("/v1/solve", json=solve_body(halting="h" * 10_000), headers=AUTH)
    assert r.status_code == 422 and len(r.text) < 600


async def test_failed_load_shows_no_absolute_path(tmp_path):
    app = create_app(Settings(weights_dir=tmp_path), [ModelSpec(name="broken", task="sudoku",
                                                                path=tmp_path / "gone" / "missing")])
    async with app.router.lifespan_context(app):
        with pytest.raises(RuntimeError):
            await app.state.runtime.wait_ready(30)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for path in ("/healthz", "/readyz"):
                r = await c.get(path)
                assert r.status_code == 503 and str(tmp_path) not in r.text, r.text
                assert "gone/missing" in r.text
