#!/usr/bin/env bash
# One bounded libFuzzer run (the ctest fuzz.<target>, cmake/fuzz.cmake):
#   run_fuzzer.sh BINARY FUZZ_DIR TARGET WORK_DIR SECONDS [extra libFuzzer flags]
# Seeds: FUZZ_DIR/corpus/TARGET and FUZZ_DIR/regressions/TARGET (read only);
# new inputs go to WORK_DIR/corpus (emptied first, so runs do not drift),
# a crashing, hanging (-timeout=5 s per input) or memory-hungry
# (-rss_limit_mb) input to WORK_DIR/artifacts/. Exit 0 when the run found
# nothing in SECONDS.
set -euo pipefail
bin=$1 fuzz_dir=$2 target=$3 work=$4 seconds=$5
shift 5
rm -rf "$work/corpus"
mkdir -p "$work/corpus" "$work/artifacts"
seeds=("$fuzz_dir/corpus/$target")
[ -d "$fuzz_dir/regressions/$target" ] && seeds+=("$fuzz_dir/regressions/$target")
dict=()
[ -f "$fuzz_dir/dicts/$target.dict" ] && dict=(-dict="$fuzz_dir/dicts/$target.dict")
rc=0
"$bin" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=8192 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/" "${dict[@]}" "$@" \
  "$work/corpus" "${seeds[@]}" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "fuzz $target: FINDING (exit $rc). The input is in $work/artifacts/:" >&2
  ls -l "$work/artifacts/" >&2 || true
  echo "Reproduce: $bin <file>. Keep it as fuzz/regressions/$target/<name> (fuzz_replay_tests" \
       "replays it), fix the parser to raise a user error, see README \"Fuzzing\"." >&2
fi
exit "$rc"
