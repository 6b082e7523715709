#pragma once
// The checks of a conformance run: Registry<Check> (common/registry.h) holds
// every check; run-plan runs each one that applies, at its stage, and
// reports them in order(). The CLI lists them (`moe-harness checks`) and the
// case validator accepts exactly their names in expect.checks.
//
// How to add a check:
//  1. Write one class deriving from moe::checks::Check (check_context.h) in
//     harness/checks/<name>_check.{h,cpp}. Its constructor gives the
//     CheckInfo: name, a one-line description, stage (the state of the run
//     it reads), order (where its verdict appears), inputs (the
//     CheckContext fields it reads) and the tolerance's source. Override
//     applies() when it concerns only some runs (decide from the context's
//     data, e.g. what the store declares, never from a wrapper's name), and
//     run(const CheckContext&), which reads the inputs
//     (require() names a missing one) and returns one verdict that every rank
//     agrees on (check_common.h: agreeVerdict).
//  2. End its .cpp with ONE line:
//       MOE_REGISTER(Check, MyCheck);
//  3. Add the .cpp to moe_checks in CMakeLists.txt, and a test that passes on
//     correct input and fails on a planted wrong one. If it needs something
//     the run does not yet put into CheckContext, add the field there and
//     fill it in harness/conformance/run_plan.cpp (which names no check).
#include <string>
#include <vector>

#include "common/registry.h"
#include "harness/checks/check_context.h"

namespace moe::checks {

// The registry itself: CheckRegistry::instance().get("parity") etc.
using CheckRegistry = Registry<Check>;

// Every registered check in report order: by order(), then by name.
std::vector<const Check*> checksInOrder();

// Runs the named checks in order (each collective where it says so; every
// rank must pass the same names). An unknown name throws before anything runs.
std::vector<CheckResult> runChecks(const std::vector<std::string>& names, const CheckContext& ctx);

}  // namespace moe::checks
