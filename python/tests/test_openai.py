"""The official openai client, unchanged, over the SDK's attested transports
(httpx2, as openai uses it), and plain httpx clients of both modules."""

import asyncio

import httpx
import httpx2
import openai
import pytest

import ciel
from ciel.errors import AttestationRefused

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def sync_client(guest, **transport):
    http = httpx2.Client(transport=ciel.AttestedTransport(**transport))
    return openai.OpenAI(base_url=guest.url + "/v1", api_key="unused", max_retries=0, http_client=http)


def async_client(guest, **transport):
    http = httpx2.AsyncClient(transport=ciel.AsyncAttestedTransport(**transport))
    return openai.AsyncOpenAI(base_url=guest.url + "/v1", api_key="unused", max_retries=0, http_client=http)


def test_chat_and_streaming(guest):
    client = sync_client(guest, policy=guest.policy)
    served = [guest.model] + ([guest.embedding_model] if guest.embedding_model else [])
    assert [m.id for m in client.models.list().data] == served
    answer = client.chat.completions.create(model=guest.model, messages=QUESTION, max_tokens=16)
    assert answer.choices[0].message.content == guest.expected
    stream = client.chat.completions.create(model=guest.model, messages=QUESTION, max_tokens=16, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 1, "the answer should arrive in pieces"
    assert "".join(pieces) == guest.expected


def test_async_chat_streaming_and_concurrency(guest):
    async def run():
        client = async_client(guest, policy=guest.policy)
        answer = await client.chat.completions.create(model=guest.model, messages=QUESTION, max_tokens=16)
        assert answer.choices[0].message.content == guest.expected
        stream = await client.chat.completions.create(
            model=guest.model, messages=QUESTION, max_tokens=16, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == guest.expected
        many = await asyncio.gather(
            *[client.chat.completions.create(model=guest.model, messages=QUESTION, max_tokens=16) for _ in range(4)]
        )
        assert [a.choices[0].message.content for a in many] == [guest.expected] * 4
        await client.close()

    asyncio.run(run())


def test_api_errors_reach_the_client_as_the_guest_sent_them(guest):
    client = sync_client(guest, policy=guest.policy)
    with pytest.raises(openai.NotFoundError, match="gpt-9"):
        client.chat.completions.create(model="gpt-9", messages=QUESTION)


# A refusal is not a network error: openai raises it as it is (no retry, no
# wrapping), with the failed checks.


def test_a_guest_the_policy_does_not_allow_gets_no_request(guest, refusing_policy, refused_on_evidence):
    client = sync_client(guest, policy=refusing_policy)
    with pytest.raises(AttestationRefused) as e:
        client.chat.completions.create(model=guest.model, messages=QUESTION)
    assert refused_on_evidence(e.value.failed), e.value.failed

    async def run():
        client = async_client(guest, policy=refusing_policy)
        with pytest.raises(AttestationRefused) as e:
            await client.chat.completions.create(model=guest.model, messages=QUESTION, stream=True)
        assert refused_on_evidence(e.value.failed), e.value.failed

    asyncio.run(run())


def test_an_impostor_tls_key_gets_no_request(guest):
    impostor = openai.OpenAI(
        base_url=guest.impostor + "/v1",
        api_key="unused",
        max_retries=2,
        http_client=httpx2.Client(transport=ciel.AttestedTransport(policy=guest.policy)),
    )
    with pytest.raises(AttestationRefused) as e:
        impostor.chat.completions.create(model=guest.model, messages=QUESTION)
    assert [c.name for c in e.value.failed] == ["tls binding"]


@pytest.mark.parametrize("module", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_plain_httpx_clients_and_the_connection_report(guest, module):
    with module.Client(transport=ciel.AttestedTransport(policy=guest.policy), base_url=guest.url) as http:
        r = http.get("/v1/models")
        assert r.status_code == 200 and r.json()["data"][0]["id"] == guest.model
        report = r.extensions[ciel.REPORT_EXTENSION]
        assert report.accepted and report.model_sha256 == guest.model_sha256
        with http.stream("POST", "/v1/completions", json={"prompt": "One, two,", "max_tokens": 4, "stream": True}) as s:
            body = b"".join(s.iter_raw())
        assert body.rstrip().endswith(b"data: [DONE]"), body
        # Plain text to the guest is impossible: TLS ends inside it.
        with pytest.raises(module.UnsupportedProtocol, match="https"):
            http.get(guest.url.replace("https://", "http://") + "/v1/models")


def test_timeouts_and_unreachable_guests_are_httpx_errors(guest):
    import socket

    transport = ciel.AttestedTransport(policy=guest.policy)
    with httpx2.Client(transport=transport, base_url=guest.url) as http:
        long = {"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0}
        with pytest.raises(httpx2.ReadTimeout) as e:
            http.post("/v1/completions", json=long, timeout=httpx2.Timeout(30.0, read=0.05))
        assert isinstance(e.value.__cause__, ciel.errors.Timeout)
        assert e.value.__cause__.phase == "read"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with httpx2.Client(transport=transport) as http:
        with pytest.raises(httpx2.ConnectError) as e:
            http.get(f"https://127.0.0.1:{port}/v1/models")
        assert isinstance(e.value.__cause__, ciel.errors.ConnectionFailed)
