"""The FAKE OpenAI server speaks the protocol the real ``openai`` client expects: the real
``langchain_openai.ChatOpenAI`` invokes it, streams from it (sync and async, with and
without usage), and the raw Server-Sent Events on the wire are shaped as OpenAI's."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.openai_server import FakeOpenAIServer, echo_context, split_reply

QUESTION = "what do the bees on my roof eat"
REPLY = "echo: " + QUESTION


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    # a proxy from the environment must not stand between the client and 127.0.0.1
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeOpenAIServer() as server:
        yield server


def chat(server: FakeOpenAIServer, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url, api_key=SecretStr("test"), model="fake",
        max_retries=0, timeout=10, **kwargs,
    )


def text_of(chunk: AIMessageChunk) -> str:
    assert isinstance(chunk.content, str)
    return chunk.content


def merged(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    return total


def check_streamed(chunks: list[AIMessageChunk]) -> None:
    """What a stream of REPLY must look like from the client's side."""
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    pieces = [text_of(c) for c in chunks if text_of(c)]
    assert len(pieces) == len(REPLY.split())  # word by word, not one blob
    assert "".join(text_of(c) for c in chunks) == REPLY
    total = merged(chunks)
    assert total.content == REPLY
    assert total.response_metadata["finish_reason"] == "stop"
    assert total.response_metadata["model_name"] == "fake"


def test_invoke_gets_the_echo_and_is_recorded(openai_server: FakeOpenAIServer) -> None:
    answer = chat(openai_server).invoke(QUESTION)

    assert isinstance(answer, AIMessage)
    assert answer.content == REPLY
    assert answer.response_metadata["finish_reason"] == "stop"
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["output_tokens"] == len(REPLY.split())
    assert len(openai_server.requests) == 1
    request = openai_server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test"
    assert not request.body.get("stream")
    assert request.body["messages"] == [{"role": "user", "content": QUESTION}]


def test_stream_yields_the_reply_word_by_word(openai_server: FakeOpenAIServer) -> None:
    chunks = list(chat(openai_server).stream(QUESTION))

    check_streamed(chunks)
    assert all(c.usage_metadata is None for c in chunks)  # usage was not asked for
    assert len(openai_server.requests) == 1
    body = openai_server.requests[0].body
    assert body["stream"] is True
    assert "stream_options" not in body
    assert body["messages"] == [{"role": "user", "content": QUESTION}]


async def test_astream_yields_the_reply_word_by_word(openai_server: FakeOpenAIServer) -> None:
    chunks = [chunk async for chunk in chat(openai_server).astream(QUESTION)]

    check_streamed(chunks)
    assert len(openai_server.requests) == 1
    assert openai_server.requests[0].body["stream"] is True


def test_stream_usage_arrives_on_the_final_chunk(openai_server: FakeOpenAIServer) -> None:
    chunks = list(chat(openai_server, stream_usage=True).stream(QUESTION))

    check_streamed(chunks)
    # one chunk carries the usage, after every piece of content (LangChain may still append an
    # empty closing chunk of its own)
    with_usage = [i for i, c in enumerate(chunks) if c.usage_metadata is not None]
    assert len(with_usage) == 1
    usage_at = with_usage[0]
    assert all(c.content == "" for c in chunks[usage_at:])
    assert usage_at > max(i for i, c in enumerate(chunks) if c.content)
    usage = chunks[usage_at].usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == len(QUESTION.split())
    assert usage["output_tokens"] == len(REPLY.split())
    assert usage["total_tokens"] == len(QUESTION.split()) + len(REPLY.split())
    assert merged(chunks).usage_metadata == usage
    body = openai_server.requests[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_one_client_streams_and_invokes_in_turn(openai_server: FakeOpenAIServer) -> None:
    # the connection is reused after a chunked stream: nothing hangs or desynchronises
    llm = chat(openai_server)
    for _ in range(2):
        assert "".join(text_of(c) for c in llm.stream(QUESTION)) == REPLY
        assert llm.invoke(QUESTION).content == REPLY
    assert [bool(r.body.get("stream")) for r in openai_server.requests] == [
        True, False, True, False
    ]


def test_echo_context_reports_system_and_history(openai_server: FakeOpenAIServer) -> None:
    openai_server.reply = echo_context
    messages = [
        SystemMessage("Be brief."),
        HumanMessage("hi"),
        AIMessage("hello"),
        HumanMessage(QUESTION),
    ]

    answer = chat(openai_server).invoke(messages)
    streamed = "".join(text_of(c) for c in chat(openai_server).stream(messages))

    expected = f"echo: {QUESTION} | system: Be brief. | history: 2 earlier messages"
    assert answer.content == expected
    assert streamed == expected


def test_echo_context_without_system_or_history() -> None:
    assert echo_context({"messages": [{"role": "user", "content": "hi"}]}) == (
        "echo: hi | history: 0 earlier messages"
    )
    assert echo_context({"messages": [
        {"role": "system", "content": "a"},
        {"role": "developer", "content": "b"},
        {"role": "system", "content": [{"type": "text", "text": "c"}]},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "after"},
    ]}) == "echo: q | system: a / c | history: 1 earlier message"
    assert echo_context({"messages": []}) == "echo:  | history: 0 earlier messages"


@pytest.mark.parametrize("text", ["", "one", "echo: a  b\nc ", "  lead"])
def test_split_reply_gives_the_text_back(text: str) -> None:
    pieces = split_reply(text)
    assert "".join(pieces) == text
    assert len(pieces) == len(text.split()) + (1 if text[-1:].isspace() else 0)


def raw_post(server: FakeOpenAIServer, body: object) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(
        "POST", "/v1/chat/completions", json.dumps(body),
        {"Content-Type": "application/json", "Authorization": "Bearer test"},
    )
    return connection.getresponse()


def events(payload: str) -> list[str]:
    """The ``data:`` values of a Server-Sent-Events body whose events are all ``data:``."""
    assert payload.endswith("\n\n")
    blocks = payload[:-2].split("\n\n")
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks)
    return [b.removeprefix("data: ") for b in blocks]


@pytest.mark.parametrize("include_usage", [False, True])
def test_the_wire_format_is_openai_sse(
    openai_server: FakeOpenAIServer, include_usage: bool
) -> None:
    body: dict[str, Any] = {
        "model": "fake", "stream": True, "messages": [{"role": "user", "content": "a b c"}],
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}

    response = raw_post(openai_server, body)

    assert response.status == 200
    assert response.version == 11
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    assert response.getheader("Transfer-Encoding") == "chunked"
    data = events(response.read().decode())
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {
        (chunks[0]["id"], chunks[0]["created"], "fake")
    }
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    if include_usage:
        *chunks, usage = chunks
        assert usage["choices"] == []
        assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        assert all(c["usage"] is None for c in chunks)
    else:
        assert all("usage" not in c for c in chunks)
    first, *middle, final = [c["choices"] for c in chunks]
    assert first == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                      "logprobs": None, "finish_reason": None}]
    assert [m[0]["delta"] for m in middle] == [
        {"content": "echo:"}, {"content": " a"}, {"content": " b"}, {"content": " c"}
    ]
    assert all(m[0]["finish_reason"] is None for m in middle)
    assert final == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert openai_server.requests[0].body == body


def test_other_paths_and_bodies_are_refused(openai_server: FakeOpenAIServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", openai_server.port, timeout=10)
    connection.request("POST", "/v1/embeddings", "{}", {"Content-Type": "application/json"})
    not_found = connection.getresponse()
    assert not_found.status == 404
    assert json.loads(not_found.read())["error"]["message"] == "no route /v1/embeddings"
    refused = raw_post(openai_server, [])
    assert refused.status == 400
    assert json.loads(refused.read())["error"]["message"] == "the body is not a JSON object"
    assert [r.path for r in openai_server.requests] == ["/v1/embeddings"]
