#!/usr/bin/env python3
"""Writes how Hugging Face's transformers renders chat templates with tools:
the oracle for ciel's template rendering (minijinja with Python's `tojson`).

    python3 scripts/template-reference.py engine/tests/reference/templates

Renders every `*.jinja` in the folder for each conversation below and writes
`rendered.json` there: {"cases": [inputs], "rendered": {template: [text]}}.
The environment is transformers' (`ImmutableSandboxedEnvironment` with
`trim_blocks`, `lstrip_blocks`, loop controls; `tojson` is `json.dumps` with
`ensure_ascii=False`; `raise_exception`). Needs jinja2 only.
"""
import json
import pathlib
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city — «quoted», naïve.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
NOW = {"type": "function", "function": {"name": "now", "description": "The time",
                                        "parameters": {"type": "object", "properties": {}}}}

CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}

CASES = [
    {"tools": [WEATHER, NOW],
     "messages": [{"role": "user", "content": "What is the weather in Paris?"}]},
    {"tools": [WEATHER],
     "messages": [
         {"role": "system", "content": "You are terse."},
         {"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": None, "tool_calls": [CALL]},
         {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"},
     ]},
    {"tools": None,
     "messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello!"},
                  {"role": "user", "content": "Bye"}]},
]


def render(source, case):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source).render(
        messages=case["messages"], tools=case["tools"], add_generation_prompt=True,
        bos_token="<BOS>", eos_token="<EOS>")


def main():
    folder = pathlib.Path(sys.argv[1])
    rendered = {}
    for path in sorted(folder.glob("*.jinja")):
        source = path.read_text()
        rendered[path.name] = [render(source, c) for c in CASES]
    out = {"jinja2": jinja2.__version__, "cases": CASES, "rendered": rendered}
    (folder / "rendered.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
