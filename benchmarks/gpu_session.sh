#!/usr/bin/env bash
# Issue 10's one-shot GPU run on a borrowed device machine, whose python3 has torch but no venv of ours.
#
#   here:        bash benchmarks/gpu_session.sh prepare
#                (ComfyUI's source without its tokenizer data in .gpu/comfyui, the wheels ComfyUI needs and the
#                machine lacks in .gpu/wheels; both git-ignored through .git/info/exclude; about 42 MB)
#   the device:  run(command="bash benchmarks/gpu_session.sh run", carry=[".gpu"], timeout_s=560)
#                (benchmarks/unet_speed.py --device cuda, then the results file into $OUT)
# Extra arguments after `run` go to unet_speed.py (e.g. --cases SD1.5:bf16:2,SDXL:bf16:2 for a second call).
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/wheels
    # the tokenizers' data (17 MB) is read only when a text encoder is built, which the benchmark never does
    (cd .cache/comfyui/ && find . -name __pycache__ -prune -o -type f -print | grep -v '^./comfy/text_encoders/.*/' \
        | grep -v '^./comfy/sd1_tokenizer/' | grep -v '^./web/' | tar -cf - -T -) | (mkdir -p .gpu/comfyui && tar -xf - -C .gpu/comfyui)
    # python3.12 wheels of what ComfyUI imports and the device image lacks (its package list: device KINDS.md)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/wheels av torchsde trampoline
    du -sh .gpu
}

run() {
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl
    mkdir -p /tmp/pack && ln -sfn "$PWD" /tmp/pack/diffusion_blocks  # the repository root is the package
    export PYTHONPATH="/tmp/pack:/tmp/site:$PWD/.gpu/comfyui" COMFYUI_PATH="$PWD/.gpu/comfyui" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    status=0
    python3 benchmarks/unet_speed.py --device cuda --skip-memory "$@" 2>&1 | tee "${OUT:-/tmp}/unet_speed_cuda.log" \
        || status=$?
    cp benchmarks/results/unet_speed_cuda.md "${OUT:-/tmp}/" 2>/dev/null || true
    return "$status"
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 prepare | run [unet_speed.py arguments]" >&2; exit 2 ;;
esac
