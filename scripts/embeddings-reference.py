#!/usr/bin/env python3
"""Writes sentence-transformers' embeddings of reference texts: the oracle
for ciel's embedding model (engine/tests/embeddings_reference.rs).

    python3 scripts/embeddings-reference.py MODEL_DIR OUT.json

MODEL_DIR is the sentence-transformers folder `scripts/fetch-model.sh
minilm` prints. Needs sentence-transformers (and so PyTorch); the test
command does not: it reads the committed output. Records each text's token
ids (the model's tokenizer, as sentence-transformers calls it) and its
vector (`encode`, the model's own pooling and normalisation, CPU, f32).
"""
import hashlib
import json
import os
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé façade — naïve café, Crème Brûlée",
    "東京都は日本の首都です。",
    "Привет, как дела? مرحبا 🙂🚀👩‍💻",
    "def f(x):\n    return x**2 + 3*x - 1  # comment",
    "   leading and trailing whitespace\t\n  ",
    "I'm sure you'll see they've done it; we'd say so.",
    "A sovereign data hub serves its own models in confidential VMs, "
    "and nobody outside the VM can read the prompts or the weights.",
    " ".join(["confidential computing protects data in use"] * 36),
]


def main():
    folder, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = SentenceTransformer(folder, device="cpu")
    model.eval()
    tok = model.tokenizer
    ids = [tok(t, truncation=True, max_length=model.max_seq_length)["input_ids"] for t in TEXTS]
    vectors = model.encode(TEXTS, convert_to_numpy=True, batch_size=len(TEXTS))
    data = open(os.path.join(folder, "model.safetensors"), "rb").read()
    ref = {
        "oracle": f"sentence-transformers {sentence_transformers.__version__}, "
                  f"torch {torch.__version__}, CPU, f32",
        "model_safetensors_sha256": hashlib.sha256(data).hexdigest(),
        "max_seq_length": model.max_seq_length,
        "cases": [
            {"text": t, "ids": i, "vector": [round(float(x), 7) for x in v]}
            for t, i, v in zip(TEXTS, ids, vectors)
        ],
    }
    with open(out, "w") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
