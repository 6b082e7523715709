#include <string>

#include "common/error.h"
#include "fuzz/targets.h"
#include "harness/suite/case_file.h"

namespace moe::fuzz {

void caseFile(const uint8_t* data, size_t size) {
  // loadCaseFile reports a broken case in CaseFile::error and never throws:
  // an exception from it is a finding, a HarnessError included.
  const std::string path = writeTempFile("case.json", data, size);
  const cases::CaseFile cf = cases::loadCaseFile(path);
  MOE_ASSERT(cf.error.empty() != cf.runs.empty(), "a case has an error and runs, or neither: ", cf.error);
  for (const auto& run : cf.runs) {
    MOE_ASSERT(!run.id.empty(), "a run without an id");
    (void)run.toJson().dump();  // what the reports record of the run
    (void)run.tolerance.toJson().dump();  // run-plan's --tolerance
  }
}

}  // namespace moe::fuzz
