#!/usr/bin/env bash
# The device lane on ONE GPU, in one command (README "GPU check"):
#  1. every default case run (not nightly, not needs-dp) with
#     `--device cuda --backend gloo`: all ranks of a run share the GPU;
#  2. the NCCL backend at world size 1: the CLI selftest (every collective)
#     and one ep=1 training run against the single-device reference.
# Multi-GPU NCCL cases stay in `ctest -L multigpu` (make test-gpu).
# MOE_HARNESS_REQUIRE_GPU=1 is set, so a missing GPU or a CPU-only libtorch
# FAILS here instead of skipping. Prints every run with its verdict and
# seconds, then the totals; exits non-zero when anything did not pass.
# Budget: 8 minutes (GPU_CHECK_TIMEOUT, seconds); the report goes to
# reports/gpu-check/ (report.json, .md, .html, junit.xml).
#
# Usage: ci/gpu-check.sh            (after `make build`; BUILD_DIR=build)
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$repo/build}"
harness="$build/bin/moe-harness"
budget="${GPU_CHECK_TIMEOUT:-480}"
jobs="${GPU_CHECK_JOBS:-2}"
report="${GPU_CHECK_REPORT:-$repo/reports/gpu-check}"
export MOE_HARNESS_REQUIRE_GPU=1
[ -x "$harness" ] || { echo "gpu-check: $harness not built (run make build)" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi -L | head -4
mkdir -p "$report"
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
status=0

echo "== 1/3 default cases, --device cuda --backend gloo (one shared GPU), $jobs job(s)"
timeout "$(left)" "$harness" run "$repo/cases" --exclude-label nightly --exclude-label needs-dp \
  --device cuda --backend gloo --jobs "$jobs" --report "$report" \
  --reference-cache "$build/reference-cache" || status=1

echo "== 2/3 nccl selftest, world size 1"
t0=$(date +%s)
if timeout "$(left)" "$harness" launch -n 1 --timeout 120 -- "$harness" selftest --backend nccl; then
  echo "pass nccl.selftest.1rank ($(( $(date +%s) - t0 )) s)"
else
  echo "FAIL nccl.selftest.1rank ($(( $(date +%s) - t0 )) s)"; status=1
fi

echo "== 3/3 nccl run-plan, world size 1 (ep=1, fp32 and bf16)"
for dtype in fp32 bf16; do
  t0=$(date +%s)
  if timeout "$(left)" "$harness" launch -n 1 --timeout 240 -- "$harness" run-plan \
       --config "$repo/cases/configs/tiny_moe.json" --mesh '{"ep":1}' --plan "$repo/cases/plans/ep.json" \
       --dtype "$dtype" --steps 4 --backend nccl --device cuda \
       --reference-cache "$build/reference-cache" >"$report/nccl_ep1_$dtype.log" 2>&1; then
    echo "pass nccl.ep1.$dtype ($(( $(date +%s) - t0 )) s)"
  else
    echo "FAIL nccl.ep1.$dtype ($(( $(date +%s) - t0 )) s): see $report/nccl_ep1_$dtype.log"; tail -5 "$report/nccl_ep1_$dtype.log"; status=1
  fi
done

echo "gpu-check: $( [ $status -eq 0 ] && echo PASSED || echo FAILED ) in $(( $(date +%s) - start )) s (budget $budget s)"
exit $status
