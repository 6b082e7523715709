#pragma once
// Conformance cases: one JSON file (cases/*.json, schema cases/schema.json)
// declares a configuration to prove, and expands to one run per point of its
// matrix (dtypes x matrix axes), each with a stable id.
//
// Run ids: "<name>.<dtype>" followed by one part per matrix axis in the fixed
// order loading, wrapper, experts_implementation, seed ("seed3"), e.g.
// "ep2_fsdp.bf16.rank0_broadcast". Ids depend only on the values, never on the
// order of keys in the file, so reports of different nights line up.
//
// Loading (loadCaseFile) never throws for a bad case: the result carries the
// error (file and line for malformed JSON, the JSON pointer for a schema
// violation, the field and the reason for a semantic error), so a suite can
// report a broken case as `error` and still run the others.
//
// Semantic checks (after the schema): the model config is valid; the plan is
// named and exists, or is inline; the mesh covers exactly world_size ranks;
// experts divide by the ep size; the plan applies on the mesh (unknown
// styles, patterns matching nothing, divisibility); every dtype has a
// tolerance; expected placements name known parameters and ranks; the
// wrappers (wrapper, matrix.wrapper) are registered data-parallel wrappers
// (parallel::paramStoreNames()) and expect.checks are registered checks
// (Registry<Check>): the schema leaves these names open so they cannot drift
// from the registries.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/checks/placement_expectation.h"

namespace moe::cases {

struct Tolerance {
  double lossAbs = 0;
  std::optional<double> rtol, atol;  // allclose
  std::optional<double> relNorm;     // relative norm error
  nlohmann::json toJson() const;     // the run-plan --tolerance form
};

// expect.placements: judged by run-plan's expected_placements check.
using PlacementExpectation = checks::PlacementExpectation;

// One run of a case: everything `run-plan` needs.
struct RunSpec {
  std::string id;
  std::string caseName;
  std::string caseFile;
  std::string description;
  nlohmann::json model;       // the config JSON (inline or read), experts_implementation applied
  std::string modelSource;    // path it came from, or "inline"
  int worldSize = 1;
  std::string backend = "gloo";
  std::string device;         // "cpu" | "cuda"; "" = the backend's default (gloo: cpu, nccl: cuda)
  nlohmann::ordered_json mesh;  // {"ep":2}, key order kept
  nlohmann::ordered_json plan;  // the plan JSON
  std::string planSource;       // "ep (cases/plans/ep.json)" or "inline"
  std::string wrapper = "none";
  std::string fsdpExperts;      // "" = run-plan's default
  std::string loading = "shard_on_read";
  std::string dtype = "fp32";
  int64_t steps = 4;
  uint64_t seed = 0;
  int64_t batchSize = 4;
  int64_t seqLen = 16;
  std::string checkpoint;  // absolute path or ""
  // "allow_nonfinite_checkpoint": load a checkpoint holding NaN or Inf
  // (run-plan --allow-nonfinite-checkpoint); the finite check then fails the run.
  bool allowNonFiniteCheckpoint = false;
  Tolerance tolerance;
  // Which checks decide the verdict; empty = every check run-plan reports.
  // A case with expect.placements and a selection gets expected_placements
  // added: its own expectations always decide.
  std::vector<std::string> checks;
  std::vector<PlacementExpectation> expectedPlacements;
  std::vector<std::string> labels;
  double timeoutSeconds = 300;
  // "save_resume" (issue 19): the run described above SAVES a distributed
  // checkpoint after step saveAt (its checkpoint_complete must pass), then a
  // second job resumes from it on resumeMesh / resumePlan / resumeWrapper
  // with resumeWorldSize ranks and trains to `steps`; the resumed job's
  // checks (resume_parity, parity, ...) are the run's verdict.
  int64_t saveAt = 0;  // 0: no save/resume
  int resumeWorldSize = 0;
  nlohmann::ordered_json resumeMesh;
  nlohmann::ordered_json resumePlan;
  std::string resumeWrapper = "none";
  std::string saveFormat = "sharded";  // "sharded" | "hf" (run-plan --save-format)

  nlohmann::json toJson() const;  // the spec as reports record it
  bool hasLabel(const std::string& l) const;
};

struct CaseFile {
  std::string path;
  std::string name;  // the case name, or the file stem when it could not be read
  std::vector<std::string> labels;
  std::vector<RunSpec> runs;  // empty when error is set
  std::string error;          // "" = valid
};

// Reads, validates and expands one case file (see the contract above).
CaseFile loadCaseFile(const std::string& path);

// Case files of a list of files and directories (a directory contributes its
// *.json files, not recursing, sorted by name; schema.json is skipped).
// Throws HarnessError for a path that does not exist.
std::vector<std::string> findCaseFiles(const std::vector<std::string>& paths);

// "file:LINE:COL: <what>" for a parse error at byte `offset` of `text`.
std::string describeParseError(const std::string& file, const std::string& text, size_t offset,
                               const std::string& what);

// The directory of the shipped named plans and configs (<source>/cases), used
// when a case outside cases/ names a plan.
std::string defaultCasesDir();

}  // namespace moe::cases
