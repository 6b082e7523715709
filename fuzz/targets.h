#pragma once
// The fuzz targets: one function per parser entry point of the harness that
// takes bytes, text or a path written by a user (or by another process).
//
// Contract of every target: it runs one input through its parser and returns
// when the parser accepted the input or rejected it with moe::HarnessError
// (a user error). Anything else escapes and is a finding: another exception
// (MOE_ASSERT's InternalError, a nlohmann::json or standard-library
// exception: exit 3 "internal error" in the CLI), a crash, a hang or a
// sanitizer report. A target also checks a property of what its parser
// accepts (a round trip) with MOE_ASSERT, so a wrong answer escapes too.
//
// Two drivers call them: fuzz/libfuzzer_main.cpp (one libFuzzer binary per
// target, clang with ASan+UBSan, build/fuzz/fuzz_<target>) and
// fuzz/replay_test.cpp (the normal gcc build: every file of
// fuzz/corpus/<target>/ and fuzz/regressions/<target>/ replayed as a gtest).
#include <cstddef>
#include <cstdint>
#include <string>

namespace moe::fuzz {

// reference/io: parseSafetensorsHeader on the input as a whole file (accepted
// headers re-encode to the same entries), then SafetensorsReader on the same
// bytes written to a file, reading every tensor.
void safetensorsHeader(const uint8_t* data, size_t size);

// harness/suite: loadCaseFile on the input written to <tmp>/case.json (JSON,
// cases/schema.json, semantic checks against the shipped configs, plans and
// registries, matrix expansion). loadCaseFile never throws for a bad case: any
// exception is a finding; an accepted case has runs and each run's JSON.
void caseFile(const uint8_t* data, size_t size);

// reference/plan: Plan::fromFile on the input, then applyPlan of an accepted
// plan to the tiny test model on the meshes {ep:2}, {ep:2,tp:2}, {dp:2,tp:3}.
void plan(const uint8_t* data, size_t size);

// reference/model: ModelConfig::fromFile on the input; an accepted config
// round-trips through toJson()/fromJson().
void modelConfig(const uint8_t* data, size_t size);

// harness/conformance: a run-plan result document as its readers take it
// (harness/suite/runner.cpp, harness/mutate/mutation_runner.cpp): JSON text,
// then RunResult::fromJson; an accepted result round-trips through toJson().
void runResult(const uint8_t* data, size_t size);

// A file in this process's own temporary directory (created once, removed
// at exit), holding `data`; its path. Parallel fuzz processes never share it.
std::string writeTempFile(const std::string& name, const uint8_t* data, size_t size);

}  // namespace moe::fuzz
