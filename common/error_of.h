#pragma once
// Test helper: runs `fn`, expects it to throw HarnessError and returns the
// message (records a gtest failure and returns "" when nothing is thrown).
#include <gtest/gtest.h>

#include <string>

#include "common/error.h"

namespace moe::testutil {

template <typename Fn>
std::string errorOf(Fn&& fn) {
  try {
    fn();
  } catch (const HarnessError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a HarnessError";
  return "";
}

}  // namespace moe::testutil
