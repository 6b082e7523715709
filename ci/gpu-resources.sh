#!/usr/bin/env bash
# Writes ctest's resource spec for this machine's GPUs to $1 (one `gpus`
# entry per visible GPU, one slot each) and prints the ctest option that uses
# it, `--resource-spec-file $1`. GPU tests declare RESOURCE_GROUPS
# ("N,gpus:1"), so with the spec `ctest -j` never puts two ranks on one GPU
# and each test's job sees only its GPUs (the launcher sets
# CUDA_VISIBLE_DEVICES from ctest's allocation).
# Without a GPU (no nvidia-smi, or it lists none) nothing is written and
# nothing printed: the GPU tests then skip with their reason (or fail under
# MOE_HARNESS_REQUIRE_GPU=1) instead of waiting for resources that never come.
set -euo pipefail
out="${1:?usage: ci/gpu-resources.sh SPEC.json}"
n=0
if command -v nvidia-smi >/dev/null 2>&1; then
  n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
fi
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  # The user narrowed the set: ctest ids are then indices into it.
  v=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c . || true)
  [ "$v" -lt "$n" ] && n=$v
fi
if [ "$n" -eq 0 ]; then
  echo "ci/gpu-resources.sh: no GPU visible; GPU tests will skip with their reason" >&2
  exit 0
fi
{
  printf '{"version": {"major": 1, "minor": 0}, "local": [{"gpus": ['
  for ((i = 0; i < n; i++)); do
    [ "$i" -gt 0 ] && printf ', '
    printf '{"id": "%d", "slots": 1}' "$i"
  done
  printf ']}]}\n'
} >"$out"
echo "ci/gpu-resources.sh: $n GPU(s) in $out" >&2
echo "--resource-spec-file $out"
