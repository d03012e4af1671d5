#!/usr/bin/env python3
"""Writes llama.cpp's answers for a GGUF: the oracle the engine's tests
compare against (token ids, detokenized text, greedy continuations with
each step's top-1 margin, and the top logits of the first steps).

    python3 scripts/llamacpp-reference.py MODEL.gguf OUT.json
    python3 scripts/llamacpp-reference.py --synthetic DIR OUT.json
    python3 scripts/llamacpp-reference.py --pre-tokenizers MODEL.gguf OUT.json

The third form runs llama.cpp's tokenizer on MODEL's BPE vocabulary under
each pre-tokenizer ciel implements (a vocabulary-only copy of the file with
`tokenizer.ggml.pre` changed), since the models that name them are not at
hand. The second form takes the synthetic models the engine writes
(`cargo run -p ciel-engine --features testing --example synthetic-gguf DIR`)
and records, for each, its digest and llama.cpp's whole logits after a
prompt and after each of a few fed tokens.

Needs llama-cpp-python (pinned below; built with AMX off, see the README).
The committed references under engine/tests/reference/ came from this
script; regenerate them only on purpose, and say why in the commit.
"""
import argparse
import hashlib
import json
import os
import sys

import llama_cpp
from llama_cpp import Llama

PINNED = "0.3.36"

# Strings that exercise every tokenizer rule: unicode, digits, whitespace
# runs, code, emoji, special-token text.
TEXTS = [
    "Hello, world!",
    "The year 2026 has 365 days; 1234567890 digits.",
    "  leading spaces and\ttabs\nand newlines\n\n",
    "    four spaces, then\n\n\n three newlines",
    "Ünïcödé façade — naïve café, 東京都, Привет, مرحبا, 🙂🚀👩‍💻",
    "def f(x):\n    return x**2 + 3*x - 1  # comment\n",
    "<html><body><table><tr><td>cell</td></tr></table></body></html>",
    "I'm sure you'll see they've done it, we'd say.",
    "a\u00a0b\u2003c\u200bd",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<bos>text after bos text",
    "",
    " ",
    "ends with space ",
    "12345 1234567 3.14159 100,000 x2y3",
    "HELLO'S they'RE I'VE WE'LL\r\n\r\nCRLF  \n  \tmixed",
    "-->>!!... ???;;; ((nested)) [[x]] {y}",
]

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village,",
]


def margin(logits):
    top = sorted(logits, reverse=True)[:2]
    return float(top[0] - top[1])


def greedy(m, prompt_ids, steps):
    m.reset()
    m.eval(prompt_ids)
    n_vocab = m.n_vocab()
    out, margins, first_logits = [], [], []
    for step in range(steps):
        ptr = llama_cpp.llama_get_logits_ith(m.ctx, -1)
        logits = [ptr[i] for i in range(n_vocab)]
        best = max(range(n_vocab), key=lambda i: logits[i])
        if step < 3:
            top = sorted(range(n_vocab), key=lambda i: -logits[i])[:8]
            first_logits.append([[i, float(logits[i])] for i in top])
        out.append(best)
        margins.append(margin(logits))
        if llama_cpp.llama_token_is_eog(m._model.vocab, best):
            break
        m.eval([best])
    return out, margins, first_logits


# The synthetic models' prompt (longer than Gemma's 4-token test window)
# and the tokens fed after it.
SYNTHETIC_PROMPT = [1, 40, 77, 120, 9, 200, 33, 150, 64, 250, 18, 99]
SYNTHETIC_FED = [70, 140, 210]


def synthetic(folder, out, threads):
    ref = {
        "oracle": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, "
                  f"n_threads={threads}, f32 K/V cache",
        "prompt_ids": SYNTHETIC_PROMPT,
        "fed_ids": SYNTHETIC_FED,
        "models": [],
    }
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".gguf"):
            continue
        path = os.path.join(folder, name)
        m = Llama(model_path=path, n_ctx=64, n_threads=threads,
                  type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
                  verbose=False)
        n_vocab = m.n_vocab()
        steps = []
        m.reset()
        m.eval(SYNTHETIC_PROMPT)
        for fed in [None] + SYNTHETIC_FED:
            if fed is not None:
                m.eval([fed])
            ptr = llama_cpp.llama_get_logits_ith(m.ctx, -1)
            steps.append([round(float(ptr[i]), 5) for i in range(n_vocab)])
        ref["models"].append({
            "file": name,
            "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
            "logits": steps,
        })
        del m
    with open(out, "w") as f:
        json.dump(ref, f)
        f.write("\n")


PRE_TOKENIZERS = ["default", "gpt-2", "smollm", "llama-bpe", "qwen2"]


def pre_tokenizers(model, out):
    import tempfile
    import gguf
    reader = gguf.GGUFReader(model)
    ref = {
        "oracle": f"llama.cpp via llama-cpp-python {llama_cpp.__version__} (vocab only)",
        "model": os.path.basename(model),
        "pre_tokenizers": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for pre in PRE_TOKENIZERS:
            path = os.path.join(tmp, f"{pre}.gguf")
            w = gguf.GGUFWriter(path, reader.fields["general.architecture"].contents())
            for name, f in reader.fields.items():
                if name.startswith("GGUF.") or name == "general.architecture":
                    continue
                vt = f.types[0]
                sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
                value = pre if name == "tokenizer.ggml.pre" else f.contents()
                w.add_key_value(name, value, vt, sub_type=sub)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
            m = Llama(model_path=path, vocab_only=True, verbose=False)
            ref["pre_tokenizers"][pre] = [
                {"text": t, "ids": m.tokenize(t.encode(), add_bos=False, special=True)}
                for t in TEXTS
            ]
            del m
    with open(out, "w") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--synthetic", action="store_true",
                    help="MODEL is a folder of synthetic models")
    ap.add_argument("--pre-tokenizers", action="store_true",
                    help="MODEL's BPE vocabulary under each pre-tokenizer")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if llama_cpp.__version__ != PINNED:
        sys.exit(f"llama-cpp-python {llama_cpp.__version__} found, {PINNED} pinned")
    if a.synthetic:
        synthetic(a.model, a.out, a.threads)
        return
    if a.pre_tokenizers:
        pre_tokenizers(a.model, a.out)
        return
    data = open(a.model, "rb").read()
    # K/V cache in f32, as ciel keeps it (llama.cpp's default f16 cache
    # moves top logits by up to ~0.4 against each other, which would hide
    # real differences under the tests' tolerance).
    m = Llama(model_path=a.model, n_ctx=2048, n_threads=a.threads,
              type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
              logits_all=False, verbose=False)
    ref = {
        "model": os.path.basename(a.model),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "oracle": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, "
                  f"n_threads={a.threads}, f32 K/V cache, greedy argmax",
        "note": "ids: special text parsed, nothing added; prompt_ids: as a "
                "prompt (BOS/EOS where the model adds them). Greedy ids can "
                "diverge where top1_margin is tiny (quantized kernels sum in "
                "different orders): compare up to the first small margin.",
        "tokenize": [],
        "greedy": [],
    }
    for t in TEXTS:
        b = t.encode()
        ids = m.tokenize(b, add_bos=False, special=True)
        prompt_ids = m.tokenize(b, add_bos=True, special=True)
        plain_ids = m.tokenize(b, add_bos=False, special=False)
        detok = m.detokenize(ids).decode("utf-8", "replace")
        detok_special = m.detokenize(ids, special=True).decode("utf-8", "replace")
        ref["tokenize"].append({
            "text": t, "ids": ids, "prompt_ids": prompt_ids,
            "plain_ids": plain_ids, "detokenized": detok,
            "detokenized_special": detok_special,
        })
    for p in PROMPTS:
        ids = m.tokenize(p.encode(), add_bos=True, special=True)
        out, margins, first = greedy(m, ids, a.steps)
        ref["greedy"].append({
            "prompt": p, "prompt_ids": ids, "greedy_ids": out,
            "top1_margin": margins, "first_logits": first,
            "text": m.detokenize(out).decode("utf-8", "replace"),
        })
    with open(a.out, "w") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
