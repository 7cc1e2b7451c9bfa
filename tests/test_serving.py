"""The serving helpers without a server: limits from the environment, folding old turns, a painted mask, the proxy
trust, and the MCP request limit."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from explainer.errors import ConfigError
from explainer.server.serving import McpRequestLimit, ServerLimits, fold, forwarded_allow_ips, jsonrpc_id, painted_mask


def turn(n: int, pictures: int = 1) -> list[dict]:
    return [{"role": "user", "content": f"question {n}"},
            *({"role": "assistant", "content": f"answer {n}.{i}"} for i in range(1 + pictures))]


def test_limits_come_from_the_environment_and_bad_values_are_named():
    assert ServerLimits.from_env({}) == ServerLimits()
    limits = ServerLimits.from_env({"EXPLAINER_TURN_SECONDS": "2.5", "EXPLAINER_SHOWN_MESSAGES": "10"})
    assert limits.turn_seconds == 2.5 and limits.shown_messages == 10
    with pytest.raises(ConfigError, match="^EXPLAINER_QUEUE_PER_SESSION must be a positive whole number "
                                          r"\(for example 3\); it is set to 'many'\.$"):
        ServerLimits.from_env({"EXPLAINER_QUEUE_PER_SESSION": "many"})
    with pytest.raises(ValueError, match="^EXPLAINER_SESSION_TTL must be a positive number of seconds "
                                         r"\(for example 3600\); it is set to '0'\.$"):  # still a ValueError
        ServerLimits.from_env({"EXPLAINER_SESSION_TTL": "0"})


def test_a_short_conversation_is_not_folded():
    messages = turn(1) + turn(2)
    assert fold(messages, 10) == (messages, 0)


def test_old_turns_fold_into_one_note_at_a_question_and_the_count_adds_up():
    messages = [m for n in range(10) for m in turn(n)]  # 30 messages
    shown, folded = fold(messages, 10)
    assert folded == 21 and len(shown) == 10  # the cut falls where question 7 starts: 9 kept + the note
    assert "21 earlier messages" in shown[0]["content"] and shown[1]["content"] == "question 7"
    more = shown + turn(10) + turn(11)
    shown, folded = fold(more, 10, folded)
    assert folded == 27 and "27 earlier messages" in shown[0]["content"] and shown[1]["content"] == "question 9"
    assert sum("earlier messages" in str(m["content"]) for m in shown) == 1


def test_a_painted_mask_is_the_opaque_brush_strokes():
    layer = np.zeros((20, 30, 4), np.uint8)
    layer[5:10, 8:12] = (255, 0, 255, 255)
    mask = painted_mask({"background": np.zeros((20, 30, 4), np.uint8), "layers": [layer], "composite": None})
    assert mask.shape == (20, 30) and mask.sum() == 20 and mask[7, 9]
    assert painted_mask({"layers": [np.zeros((20, 30, 4), np.uint8)]}) is None  # nothing painted
    for hostile in (None, "x", {"layers": "no"}, {"layers": [np.zeros((5, 5))]}, {"layers": [np.zeros((5, 5, 3))]}):
        assert painted_mask(hostile) is None


# ------------------------------------------------------------------------------ client addresses and proxies


def test_unread_time_and_trusted_proxies_come_from_the_environment():
    limits = ServerLimits.from_env({"EXPLAINER_UNREAD_SECONDS": "2.5",
                                    "EXPLAINER_TRUSTED_PROXIES": " 10.0.0.0/8, 192.168.1.7 ,::1"})
    assert limits.unread_seconds == 2.5 and limits.trusted_proxies == "10.0.0.0/8,192.168.1.7,::1"
    assert ServerLimits().trusted_proxies == ""  # by default nobody may name the client in X-Forwarded-For
    for bad in ("*", "proxy.example.org", "10.0.0.0/8;1.2.3.4", "300.1.1.1"):
        with pytest.raises(ConfigError, match=f"^EXPLAINER_TRUSTED_PROXIES must be IP addresses or networks .*"
                                              f"it is set to '{re.escape(bad)}'"):
            ServerLimits.from_env({"EXPLAINER_TRUSTED_PROXIES": bad})
    for bad in ("inf", "nan", "-1"):
        with pytest.raises(ConfigError, match=f"^EXPLAINER_UNREAD_SECONDS must be a positive number of seconds .*"
                                              f"it is set to '{bad}'"):
            ServerLimits.from_env({"EXPLAINER_UNREAD_SECONDS": bad})


def test_uvicorn_trusts_forwarded_headers_only_from_the_named_proxies_while_starting(monkeypatch):
    from uvicorn.config import Config

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "operator-value")
    with forwarded_allow_ips(""):
        assert Config(app=None).forwarded_allow_ips == ""  # uvicorn's default would be 127.0.0.1
    with forwarded_allow_ips("10.0.0.0/8"):
        assert Config(app=None).forwarded_allow_ips == "10.0.0.0/8"
    assert os.environ["FORWARDED_ALLOW_IPS"] == "operator-value"  # put back afterwards
    monkeypatch.delenv("FORWARDED_ALLOW_IPS")
    with forwarded_allow_ips(""):
        pass
    assert "FORWARDED_ALLOW_IPS" not in os.environ


# ----------------------------------------------------------------------------------- MCP requests too large


LIMIT = 1000


async def _asgi_call(app, chunks: list[bytes], declared: int | None, path: str = "/gradio_api/mcp/") -> tuple:
    """Send ``chunks`` as a POST body through the ASGI ``app``: (status, content type, body) of its answer."""
    headers = [(b"content-type", b"application/json")]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]).get(b"content-type"), body


async def _echo(scope, receive, send):
    """The MCP endpoint's stand-in: answers with the body it received."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def tool_call(image_chars: int, id_first: bool) -> bytes:
    call = {"method": "tools/call", "params": {"name": "explain", "arguments": {"image": "A" * image_chars}}}
    message = {"jsonrpc": "2.0", "id": 7, **call} if id_first else {**call, "jsonrpc": "2.0", "id": 7}
    return json.dumps(message).encode()


@pytest.mark.parametrize("id_first", [True, False])
@pytest.mark.parametrize("declared", [True, False])  # with Content-Length, or chunked without it
def test_an_mcp_tool_call_over_the_limit_gets_a_tool_error_with_its_id(id_first, declared):
    import asyncio

    limited = McpRequestLimit(_echo, limit=LIMIT)
    small = tool_call(100, id_first)
    chunks = [small[:50], small[50:]]
    assert asyncio.run(_asgi_call(limited, chunks, len(small) if declared else None)) == (202, b"text/plain", small)
    big = tool_call(5 * LIMIT, id_first)
    chunks = [big[i:i + 300] for i in range(0, len(big), 300)]
    status, kind, body = asyncio.run(_asgi_call(limited, chunks, len(big) if declared else None))
    answer = json.loads(body)
    assert status == 200 and kind == b"application/json" and answer["id"] == 7 and answer["jsonrpc"] == "2.0"
    assert answer["result"]["isError"] is True
    assert "at most 0.000953674 MiB" in answer["result"]["content"][0]["text"]  # the limit, as the message says it


def test_other_oversized_requests_still_get_413_and_other_paths_pass():
    import asyncio

    limited = McpRequestLimit(_echo, limit=LIMIT)
    listing = json.dumps({"method": "tools/list", "params": {"x": "A" * 5000}, "jsonrpc": "2.0", "id": 3}).encode()
    assert asyncio.run(_asgi_call(limited, [listing], len(listing)))[0] == 413
    no_id = json.dumps({"method": "tools/call", "params": {"x": "A" * 5000}}).encode()
    assert asyncio.run(_asgi_call(limited, [no_id], len(no_id)))[0] == 413
    elsewhere = asyncio.run(_asgi_call(limited, [listing], len(listing), path="/gradio_api/upload"))
    assert elsewhere == (202, b"text/plain", listing)  # not the MCP endpoint: untouched


def test_a_jsonrpc_id_is_found_at_either_end_and_not_inside_params():
    assert jsonrpc_id(b'{"jsonrpc": "2.0", "id": "a-1", "method": "tools/call", "params": {"x": "AAA', b"") == "a-1"
    assert jsonrpc_id(b'{"method": "tools/call", "params": {"x": "AAA', b'AA"}}, "jsonrpc": "2.0", "id": 12}') == 12
    assert jsonrpc_id(b'{"params": {"id": 5, "x": "AAA', b'AAA"}}') is None  # an "id" inside params is not it
    assert jsonrpc_id(b'{"params": {"x": "AAA', b'A", "y": {"id": 9}}}') is None
    assert jsonrpc_id(b'{"id": true, "method": "x"}', b"") is None
