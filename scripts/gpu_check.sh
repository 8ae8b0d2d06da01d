#!/usr/bin/env bash
# Everything that needs a CUDA device, in one run for a lent GPU machine (on an H200: about 13 minutes on a
# fresh machine, where gpt2-small's first compilation alone takes over 3 minutes; less once compiled): the tests
# marked `gpu`, then the training-throughput benchmark (compiled, the 2 × 2 ablation of model and
# optimizer, first-step compile seconds, and a kernel profile of each config written to OUT_DIR/gpu-profile-*.md
# for docs/gpu-profile.md) on the tinystories-17m and gpt2-small configs, the float8 switch, the CUDA-graph
# path with the host-sync check, the attention masks, and the fused loss against Liger-Kernel's.
# Each step's output goes to OUT_DIR (default gpu_check/); a step that fails does not stop the ones after it,
# and the exit status says whether any failed.
#
#   bash scripts/gpu_check.sh [OUT_DIR]
# bpe_lm must be importable (pip install ".[lm,test]", or the abi3 wheel on PYTHONPATH); Liger-Kernel is a
# peer where installed (a machine without internet: carry `pip download --no-deps liger-kernel` and install it).
set -uo pipefail
out=${1:-gpu_check}
mkdir -p "$out"
status=0
step() {  # step NAME SECONDS COMMAND...: runs COMMAND with a time limit, output to OUT_DIR/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.txt" 2>&1
    local rc=$?
    echo "   exit $rc after $((SECONDS - start)) s"
    tail -n 25 "$out/$name.txt"
    [ "$rc" -eq 0 ] || status=1
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/device.txt" 2>&1
python -c "import torch, bpe_lm; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" >>"$out/device.txt" 2>&1
cat "$out/device.txt"
step pytest_gpu 110 python -m pytest -q -m gpu -p no:cacheprovider tests
step throughput_17m 170 python benches/train_throughput.py --compile --config tinystories-17m:128 --profile "$out/gpu-profile-17m.md"
step throughput_gpt2_small 360 python benches/train_throughput.py --compile --config gpt2-small:32 --steps 50 --warmup 6 --repeat 2 --profile "$out/gpu-profile-gpt2-small.md"
step float8_17m 150 python benches/train_throughput.py --compile --float8 --config tinystories-17m:128 --repeat 1
step cuda_graphs_17m 110 python benches/train_throughput.py --compile --cuda-graphs --check-sync --config tinystories-17m:128
step document_mask 120 python benches/document_mask.py
step linear_cross_entropy 90 python benches/linear_cross_entropy.py --device cuda --dtype bfloat16 --rows 32768 --vocab 50257 --dim 768
exit $status
