#!/usr/bin/env bash
# The GPU checks, for a machine with an NVIDIA GPU (the device tool's, or
# any): what the machine has, its GPUs' evidence through ciel's NVML path and
# that evidence verified, then each model on cuda:0 against ours on the CPU
# (`ciel bench device`: sealed vs plaintext load onto the GPU, greedy tokens
# compared, tok/s). Every result goes under $OUT; a step that fails is
# recorded and the next one still runs. Exit status: the number of failed
# steps.
#
#   CIEL=target/cuda/release/ciel MODELS="a.gguf b.gguf" OUT=/tmp/out scripts/device-check.sh
#
# CIEL   the CUDA build (scripts/build-cuda.sh; default target/cuda/release/ciel)
# LIBS   a folder with CUDA 13's libcublas/libcublasLt/libcurand/libnvrtc/libcudart,
#        if the machine has none on the loader's path (scripts/build-cuda.sh --lib-dir)
# MODELS GGUF files (default: none; the device tool carries 64 MiB per call, so
#        a model is carried in parts over several calls and joined first)
# OUT    results (default /tmp/ciel-device)
set -uo pipefail
ciel=${CIEL:-target/cuda/release/ciel}
out=${OUT:-/tmp/ciel-device}
mkdir -p "$out"
[ -n "${LIBS:-}" ] && export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
failed=0
step() {
    local name=$1
    shift
    echo "== $name: $*" >&2
    if "$@" > "$out/$name.out" 2> "$out/$name.err"; then
        echo "   ok" >&2
    else
        echo "   FAILED ($?): $(tail -n 3 "$out/$name.err")" >&2
        failed=$((failed + 1))
    fi
}

# 1. The machine: driver, CUDA, the GPUs' confidential-computing state.
step machine sh -c 'nvidia-smi; nvidia-smi -q | grep -iE "driver version|cuda version|product name|confidential|protected|ready"; nvidia-smi conf-compute -f; nvidia-smi conf-compute -grs; nvidia-smi conf-compute -d; ldconfig -p | grep -E "libcuda\.|libcublas|libnvidia-ml"; nproc; grep -m1 "model name" /proc/cpuinfo'
step version "$ciel" --version

# 2. Evidence through NVML for a fresh nonce, then verified as a set
#    (NVIDIA's pinned root, the nonce, CC on, DEVTOOLS off; no OCSP or
#    RIMs: nothing here reaches NVIDIA's services).
nonce=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
step gpu-collect "$ciel" attest gpu-collect --from nvml --nonce "$nonce" --out "$out/gpus.json"
step gpu-verify "$ciel" attest gpu-verify "$out/gpus.json" --nonce "$nonce"
step gpu-verify-json "$ciel" attest gpu-verify "$out/gpus.json" --nonce "$nonce" --json

# 3. Each model on the GPU against ours on the CPU, in one run each.
for model in ${MODELS:-}; do
    step "bench-$(basename "$model" .gguf)" "$ciel" bench --json --device cuda:0 --model "$model" device
done
echo "results in $out; $failed steps failed" >&2
exit "$failed"
