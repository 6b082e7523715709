#pragma once
// Helpers of the config reader tests: edit one field of a config, expect
// ModelConfig::fromJson to refuse it with a message naming the problem.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "reference/model/config.h"

namespace moe::ref::testutil {

// `j` with `key` set to `value`.
inline nlohmann::json with(nlohmann::json j, const char* key, nlohmann::json value) {
  j[key] = std::move(value);
  return j;
}

// Expects fromJson(j) to throw a HarnessError whose message contains every needle.
inline void expectError(const nlohmann::json& j, std::initializer_list<const char*> needles) {
  try {
    ModelConfig::fromJson(j);
    ADD_FAILURE() << "no error for " << j.dump();
  } catch (const HarnessError& e) {
    for (const char* n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "message \"" << e.what() << "\" lacks \"" << n << "\"";
  }
}

}  // namespace moe::ref::testutil
