"""The official `openai` Python client, unchanged, calling tools on a guest
API that serves the demo model's weights under Qwen 2.5's chat template:
a required call and a named one come back as the client's typed
`tool_calls` (whole and streamed), a conversation carrying the call and the
tool's answer goes through, and a malformed tool is a BadRequestError.

    python openai_tools.py BASE_URL

Run by enclave/tests/openai_tools.rs with the pinned client that
scripts/python-env.sh installs. Exits non-zero on the first mismatch.
"""

import json
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)
weather = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
clock = {"type": "function", "function": {"name": "now", "description": "The time now"}}
question = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def check(cond, what):
    if not cond:
        sys.exit(f"openai client (tools): {what}")


r = client.chat.completions.create(model="m", messages=question, tools=[weather],
                                   tool_choice="required", max_tokens=96)
choice = r.choices[0]
check(choice.finish_reason == "tool_calls", f"finish: {r}")
call = choice.message.tool_calls[0]
check(call.type == "function" and call.function.name == "get_weather", f"call: {call}")
check(isinstance(json.loads(call.function.arguments)["city"], str), f"arguments: {call}")

r = client.chat.completions.create(model="m", messages=question, tools=[weather, clock],
                                   tool_choice={"type": "function", "function": {"name": "now"}},
                                   max_tokens=32)
check([c.function.name for c in r.choices[0].message.tool_calls] == ["now"], f"named: {r}")

# Streamed: the client's chunks carry the call as deltas.
names, args, finish = [], "", None
for chunk in client.chat.completions.create(model="m", messages=question, tools=[weather],
                                            tool_choice="required", parallel_tool_calls=False,
                                            max_tokens=96, stream=True):
    for c in chunk.choices:
        for d in c.delta.tool_calls or []:
            if d.function.name:
                names.append(d.function.name)
            args += d.function.arguments or ""
        finish = c.finish_reason or finish
check(names == ["get_weather"] and finish == "tool_calls", f"streamed: {names} {finish}")
check(isinstance(json.loads(args)["city"], str), f"streamed arguments: {args}")

# The call and the tool's answer, sent back as the client builds them.
followup = question + [
    {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
    {"role": "tool", "tool_call_id": call.id, "content": "21 C, sunny"},
]
r = client.chat.completions.create(model="m", messages=followup, tools=[weather], max_tokens=8)
check(r.choices[0].finish_reason in ("stop", "length", "tool_calls"), f"follow-up: {r}")

try:
    client.chat.completions.create(model="m", messages=question, tools=[
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
            "s": {"type": "string", "pattern": "^a"}}}}}])
    check(False, "an unsupported schema keyword was accepted")
except openai.BadRequestError as e:
    check("pattern" in str(e), f"refusal: {e}")
print("openai client (tools): all checks passed")
