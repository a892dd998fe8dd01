"""The listening side: HTTPS with `server.tls`, and the per-connection bounds on header sizes
and counts, answered before any handler runs."""

from __future__ import annotations

import socket
import ssl
import textwrap
from pathlib import Path

import httpx
import openai
import pytest
import trustme

from tests.e2e.conftest import GATEWAY_ENV, GATEWAY_KEY
from tests.fakes.openai_provider import FakeOpenAI
from tests.harness import Gateway

HELLO = [{"role": "user", "content": "hello there"}]


def config(fake: FakeOpenAI, server: str) -> str:
    return textwrap.dedent(f"""\
        server: {{{server}}}
        keys: [{{name: team-a, key: env:SLUICE_KEY_TEAM_A}}]
        providers:
          oai: {{kind: openai, base_url: "{fake.base_url}", api_key: env:UP_OPENAI_KEY}}
        models:
          m: {{targets: [{{provider: oai, model: gpt-4o-mini}}]}}
        """)


def test_tls_listener_serves_the_sdk_and_refuses_plain_http(tmp_path: Path,
                                                            upstream: FakeOpenAI) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    gw = Gateway(tmp_path, config(upstream, f"tls: {{cert: {cert_file}, key: {key_file}}}"),
                 GATEWAY_ENV, tls_ca=str(ca_file))
    try:
        gw.start()
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca_file))) as http:
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY,
                                   http_client=http, max_retries=0)
            answer = client.chat.completions.create(model="m", messages=HELLO)  # type: ignore[arg-type]
            assert answer.choices[0].message.content == "echo: hello there"
        with pytest.raises(httpx.HTTPError):
            httpx.get(gw.url.replace("https://", "http://") + "/health", timeout=3)
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
            httpx.get(f"{gw.url}/health", timeout=3)
    finally:
        gw.stop()
    assert '"tls":true' in gw.log()


def test_header_bounds_are_enforced(tmp_path: Path, upstream: FakeOpenAI) -> None:
    gw = Gateway(tmp_path, config(upstream, "max_header: 1KiB, max_headers: 20"),
                 GATEWAY_ENV).start()
    try:
        auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
        ok = httpx.post(f"{gw.url}/v1/chat/completions", headers=auth,
                        json={"model": "m", "messages": HELLO})
        assert ok.status_code == 200
        long = httpx.post(f"{gw.url}/v1/chat/completions", headers={**auth, "x-big": "a" * 2000},
                          json={"model": "m", "messages": HELLO})
        assert long.status_code in (400, 431)
        many = httpx.post(f"{gw.url}/v1/chat/completions",
                          headers={**auth, **{f"x-h{i}": "v" for i in range(40)}},
                          json={"model": "m", "messages": HELLO})
        assert many.status_code in (400, 431)
        assert not upstream.requests[1:], "a refused request reached the provider"
        # A raw request line over the bound is refused too.
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(100).split(b" ")[1] in (b"400", b"414", b"431")
    finally:
        gw.stop()
