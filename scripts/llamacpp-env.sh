#!/usr/bin/env bash
# llama.cpp's Python binding, the engine's oracle: for `ciel bench inference`
# (set CIEL_LLAMA_CPP_PYTHON to what this prints) and for regenerating the
# committed references (scripts/llamacpp-reference.py). Not needed by the
# test command, which reads the committed references. Built from source once
# (about 20 minutes on 2 cores) for this CPU's vector extensions, with AMX off
# (its AMX path crashes in these VMs); cached, idempotent. Prints the python.
set -euo pipefail
version=0.3.36
venv="${CIEL_CACHE:-$HOME/.cache/ciel}/venv-llamacpp"
if [ -x "$venv/bin/python" ] &&
    [ "$("$venv/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null)" = "$version" ]; then
    echo "$venv/bin/python"; exit 0
fi
avx512=OFF
if grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo; then avx512=ON; fi
vnni=OFF
if [ "$avx512" = ON ] && grep -qw avx512_vnni /proc/cpuinfo; then vnni=ON; fi
echo "building llama-cpp-python $version into $venv (AVX2, AVX-512 $avx512, VNNI $vnni, AMX off; once, ~20 min) ..." >&2
rm -rf "$venv"
python3 -m venv "$venv"
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=$avx512 -DGGML_AVX512_VNNI=$vnni -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" \
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "llama-cpp-python==$version" "gguf==0.19.0" "numpy==2.4.6" >&2
"$venv/bin/python" -c "import llama_cpp" >&2
echo "$venv/bin/python"
