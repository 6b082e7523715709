#pragma once
// Test helper shared by the test files: a substring assertion whose failure
// shows both texts.
#include <gtest/gtest.h>

#include <string>

namespace moe::testutil {

// EXPECT_TRUE(has(message, "rank 1")): passes when `part` occurs in `text`.
inline ::testing::AssertionResult has(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\n  \"" << text << "\"\ndoes not contain\n  \"" << part << "\"";
}

}  // namespace moe::testutil
