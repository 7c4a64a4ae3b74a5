"""The chat history rebuilds a URL from a caller's redis client: TLS options survive."""

from __future__ import annotations

import ssl

import redis

from memory_engine.langchain._history import _url_of


def test_a_tls_client_keeps_its_ca_and_checks() -> None:
    client = redis.Redis(host="127.0.0.1", port=6380, db=2, username="app", password="p@ss",
                         ssl=True, ssl_cert_reqs=ssl.CERT_REQUIRED,
                         ssl_ca_certs="/etc/ca.pem", ssl_check_hostname=True)
    url = _url_of(client)
    assert url.startswith("rediss://app:p%40ss@127.0.0.1:6380/2?")
    again = redis.Redis.from_url(url).connection_pool.connection_kwargs
    assert again["ssl_ca_certs"] == "/etc/ca.pem"
    assert again["ssl_cert_reqs"] == "required"
    assert again["ssl_check_hostname"] is True
    assert again["password"] == "p@ss"


def test_a_plain_client_gets_a_plain_url() -> None:
    client = redis.Redis(host="127.0.0.1", port=6379, password="x")
    assert _url_of(client) == "redis://:x@127.0.0.1:6379/0"
