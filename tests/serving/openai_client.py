"""The official `openai` Python client, unchanged, against `ciel proxy` (which
verifies the guest and forwards over attested TLS): models, chat, streaming
with usage and log-probabilities, n choices, completions, embeddings (equal
to sentence-transformers' reference vectors), and refusals.

    python openai_client.py BASE_URL MODEL EXPECTED_ANSWER EMBEDDING_MODEL EMBEDDING_REFERENCE

Run by tests/serving (clients.rs) with the pinned client that
scripts/python-env.sh installs. Exits non-zero on the first mismatch.
"""

import base64
import json
import struct
import sys

import openai

base_url, model, expected, embedding_model, embedding_reference = sys.argv[1:6]
client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
question = [{"role": "user", "content": "What is the capital of France?"}]


def check(cond, what):
    if not cond:
        sys.exit(f"openai client: {what}")


models = client.models.list()
check([m.id for m in models.data] == [model, embedding_model], f"models: {models}")

# Embeddings: left to itself the client asks for base64 and decodes it;
# asked for base64 it hands the text over; float is a list. The vectors
# equal sentence-transformers' on the same weights.
reference = json.load(open(embedding_reference))["cases"]
texts = [c["text"] for c in reference[:3]]
for fmt in [None, "base64", "float"]:
    args = {} if fmt is None else {"encoding_format": fmt}
    e = client.embeddings.create(model=embedding_model, input=texts, **args)
    check(len(e.data) == 3 and e.model == embedding_model, f"embeddings: {e}")
    for d, c in zip(e.data, reference):
        v, w = d.embedding, c["vector"]
        if fmt == "base64":
            raw = base64.b64decode(v)
            v = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        cosine = sum(a * b for a, b in zip(v, w)) / (sum(a * a for a in v) * sum(b * b for b in w)) ** 0.5
        check(len(v) == 384 and cosine > 1 - 1e-4, f"embedding {d.index} ({fmt}): cosine {cosine}")
    check(e.usage.prompt_tokens == sum(len(c["ids"]) for c in reference[:3]), f"usage: {e.usage}")
try:
    client.embeddings.create(model=embedding_model, input="x", dimensions=64)
    check(False, "dimensions were accepted")
except openai.BadRequestError as err:
    check("dimensions" in str(err), f"refusal: {err}")

answer = client.chat.completions.create(model=model, messages=question, max_tokens=16)
check(answer.choices[0].message.content == expected, f"chat: {answer}")
check(answer.usage.completion_tokens >= 1, f"usage: {answer.usage}")

# Streamed, with the usage chunk and log-probabilities: the same answer.
chunks = list(
    client.chat.completions.create(
        model=model,
        messages=question,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        logprobs=True,
        top_logprobs=2,
    )
)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(text == expected, f"stream: {text!r} != {expected!r}")
usage = chunks[-1].usage
check(usage is not None and not chunks[-1].choices, f"usage chunk: {chunks[-1]}")
entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
check(len(entries) == usage.completion_tokens, f"{len(entries)} logprobs for {usage}")
check(all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries), f"logprobs: {entries}")
check(bytes(b for e in entries for b in e.bytes).decode() == expected, "logprob bytes")

# n choices, streamed: each index's text.
chunks = list(
    client.chat.completions.create(
        model=model, messages=question, max_tokens=6, n=2, stream=True, temperature=0.0
    )
)
texts = {}
for c in chunks:
    for ch in c.choices:
        texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
check(sorted(texts) == [0, 1] and texts[0] == texts[1], f"n=2 stream: {texts}")

done = client.completions.create(model=model, prompt="One, two, three,", max_tokens=4, logprobs=1)
check(done.choices[0].text and done.object == "text_completion", f"completions: {done}")
check("".join(done.choices[0].logprobs.tokens) == done.choices[0].text, f"{done.choices[0].logprobs}")

# Structured output: the answer parses and matches the schema.
schema = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "London", "Rome"]}, "sure": {"type": "boolean"}},
    "required": ["city", "sure"],
    "additionalProperties": False,
}
r = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Where is the Eiffel Tower? Answer in JSON."}],
    max_tokens=200,
    response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}},
)
check(r.choices[0].finish_reason == "stop", f"structured: {r}")
place = json.loads(r.choices[0].message.content)
check(place["city"] in ("Paris", "London", "Rome") and isinstance(place["sure"], bool), f"{place}")

# What the server does not do is refused by name, never ignored.
try:
    client.chat.completions.create(model=model, messages=question, tools=[
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    check(False, "tools were accepted")
except openai.BadRequestError as e:
    check("tools" in str(e), f"refusal: {e}")
try:
    client.chat.completions.create(model="gpt-9", messages=question)
    check(False, "an unknown model was accepted")
except openai.NotFoundError as e:
    check("gpt-9" in str(e), f"refusal: {e}")
print("openai client: all checks passed")
