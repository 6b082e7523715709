// Case files: the schema validator, expansion into runs with stable ids, and
// one test per bad-input kind of issue 6 (each a clear error naming where).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>

#include "harness/suite/case_file.h"
#include "harness/suite/json_schema.h"
#include "common/error.h"

namespace moe::cases {
namespace {
namespace fs = std::filesystem;

// ---- the schema validator ----------------------------------------------------
JsonSchema smallSchema() {
  return JsonSchema(nlohmann::json::parse(R"({
    "type": "object", "required": ["n"], "additionalProperties": false,
    "properties": {
      "n": {"type": "integer", "minimum": 1},
      "s": {"type": "string", "pattern": "^[a-z]+$"},
      "e": {"$ref": "#/definitions/color"},
      "a": {"type": "array", "minItems": 1, "items": {"type": "number"}},
      "u": {"anyOf": [{"type": "string"}, {"type": "object", "required": ["k"]}]}
    },
    "definitions": {"color": {"enum": ["red", "blue"]}}
  })"));
}

std::string firstViolation(const JsonSchema& s, const std::string& doc) {
  const auto v = s.validate(nlohmann::json::parse(doc));
  return v.empty() ? "" : v.front().describe();
}

TEST(JsonSchema, AcceptsAConformingDocument) {
  EXPECT_TRUE(smallSchema().validate(nlohmann::json::parse(R"({"n": 2, "s": "ab", "e": "red", "a": [1, 2.5], "u": {"k": 1}})")).empty());
  // 3.0 is an integer in JSON Schema.
  EXPECT_TRUE(smallSchema().validate(nlohmann::json::parse(R"({"n": 3.0})")).empty());
}

TEST(JsonSchema, NamesThePointerAndTheProblem) {
  const auto s = smallSchema();
  EXPECT_EQ(firstViolation(s, R"({"n": "2"})"), "/n: expected integer, got string \"2\"");
  EXPECT_EQ(firstViolation(s, R"({"n": 0})"), "/n: 0 is below the minimum 1");
  EXPECT_EQ(firstViolation(s, R"({})"), "(document): missing required property 'n'");
  EXPECT_EQ(firstViolation(s, R"({"n": 1, "s": "A"})"), "/s: \"A\" does not match the pattern ^[a-z]+$");
  EXPECT_EQ(firstViolation(s, R"({"n": 1, "e": "green"})"), "/e: \"green\" is not one of \"red\", \"blue\"");
  EXPECT_EQ(firstViolation(s, R"({"n": 1, "a": []})"), "/a: has 0 items, needs at least 1");
  EXPECT_EQ(firstViolation(s, R"({"n": 1, "a": [1, "x"]})"), "/a/1: expected number, got string \"x\"");
  EXPECT_NE(firstViolation(s, R"({"n": 1, "zz": 1})").find("/zz: unknown property 'zz'"), std::string::npos);
  EXPECT_NE(firstViolation(s, R"({"n": 1, "u": {"j": 1}})").find("/u: matches none of the allowed forms"), std::string::npos);
}

TEST(JsonSchema, RejectsUnsupportedKeywordsAndDanglingRefs) {
  EXPECT_THROW(JsonSchema(nlohmann::json::parse(R"({"oneOf": []})")), HarnessError);
  EXPECT_THROW(JsonSchema(nlohmann::json::parse(R"({"$ref": "#/definitions/none"})")), HarnessError);
}

TEST(JsonSchema, TheShippedCaseSchemaLoads) {
  EXPECT_FALSE(caseSchema().validate(nlohmann::json::object()).empty());
}

TEST(ParseError, LineAndColumnFromTheByteOffset) {
  // offset 9 is the 'x' on line 3, column 2.
  EXPECT_EQ(describeParseError("f.json", "{\n \"a\":\n x}", 9, "bad"), "f.json:3:2: bad");
}

// ---- case files ------------------------------------------------------------
class CaseFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moe_cases_test_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const auto p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  // A valid case; `patch` is merged into it.
  std::string writeCase(const std::string& name, const nlohmann::json& patch) {
    nlohmann::json c = {{"name", name},
                        {"model", defaultCasesDir() + "/configs/tiny_moe.json"},
                        {"world_size", 2},
                        {"mesh", {{"ep", 2}}},
                        {"plan", "ep"},
                        {"dtypes", {"fp32"}},
                        {"steps", 2},
                        {"tolerances", {{"fp32", {{"loss_abs", 1e-5}, {"rtol", 1e-4}, {"atol", 1e-6}}}}}};
    c.merge_patch(patch);
    return write(name + ".json", c.dump(2));
  }
  fs::path dir_;
};

std::vector<std::string> ids(const CaseFile& c) {
  std::vector<std::string> out;
  for (const auto& r : c.runs) out.push_back(r.id);
  return out;
}

TEST_F(CaseFileTest, MatrixExpandsToStableIds) {
  const auto c = loadCaseFile(writeCase("m", {{"dtypes", {"fp32", "bf16"}},
                                             {"tolerances", {{"bf16", {{"loss_abs", 5e-3}, {"rel_norm", 2e-2}}}}},
                                             {"matrix", {{"seed", {1, 2}}, {"loading", {"shard_on_read", "init_then_load"}}}}}));
  ASSERT_EQ(c.error, "");
  // dtype outermost, then loading, then seed: the fixed axis order, not the file's key order.
  const std::vector<std::string> want = {
      "m.fp32.shard_on_read.seed1", "m.fp32.shard_on_read.seed2", "m.fp32.init_then_load.seed1", "m.fp32.init_then_load.seed2",
      "m.bf16.shard_on_read.seed1", "m.bf16.shard_on_read.seed2", "m.bf16.init_then_load.seed1", "m.bf16.init_then_load.seed2"};
  EXPECT_EQ(ids(c), want);
  EXPECT_EQ(c.runs[5].seed, 2u);
  EXPECT_EQ(c.runs[6].loading, "init_then_load");
  ASSERT_TRUE(c.runs[4].tolerance.relNorm.has_value());
  EXPECT_EQ(*c.runs[4].tolerance.relNorm, 2e-2);
  EXPECT_FALSE(c.runs[0].tolerance.relNorm.has_value());
}

TEST_F(CaseFileTest, InlineModelPlanAndWrapperOptions) {
  nlohmann::json model = nlohmann::json::parse(std::ifstream(defaultCasesDir() + "/configs/tiny_moe.json"));
  const auto c = loadCaseFile(writeCase("i", {{"model", model},
                                             {"plan", nlohmann::json::array({{"model.layers.*.mlp.experts", "grouped_gemm"}})},
                                             {"experts_implementation", "loop"},
                                             {"wrapper", {{"kind", "fsdp"}, {"fsdp_experts", "edp"}}}}));
  ASSERT_EQ(c.error, "");
  ASSERT_EQ(c.runs.size(), 1u);
  EXPECT_EQ(c.runs[0].model["experts_implementation"], "loop");
  EXPECT_EQ(c.runs[0].wrapper, "fsdp");
  EXPECT_EQ(c.runs[0].fsdpExperts, "edp");
  EXPECT_EQ(c.runs[0].planSource, "inline");
}

// ---- bad input (issue 6 item 6): one test per kind ---------------------------
TEST_F(CaseFileTest, MalformedJsonNamesFileAndLine) {
  const auto path = write("broken.json", "{\n  \"name\": \"b\",\n  \"world_size\": 2,,\n}\n");
  const auto c = loadCaseFile(path);
  EXPECT_TRUE(c.runs.empty());
  EXPECT_NE(c.error.find(path + ":3:"), std::string::npos) << c.error;
  EXPECT_NE(c.error.find("malformed JSON"), std::string::npos) << c.error;
  EXPECT_EQ(c.name, "broken");  // the file stem names a case that could not be read
}

TEST_F(CaseFileTest, SchemaViolationNamesThePointer) {
  const auto c = loadCaseFile(writeCase("s", {{"world_size", "two"}}));
  EXPECT_NE(c.error.find("/world_size: expected integer, got string \"two\""), std::string::npos) << c.error;
  const auto d = loadCaseFile(writeCase("t", {{"mesh", {{"xp", 2}}}}));
  EXPECT_NE(d.error.find("/mesh/xp: property name \"xp\" is not one of"), std::string::npos) << d.error;
}

TEST_F(CaseFileTest, UnknownStyleIsAnError) {
  const auto c = loadCaseFile(writeCase("u", {{"plan", nlohmann::json::array({{"model.layers.*.mlp.experts", "grouped_gemmm"}})}}));
  EXPECT_NE(c.error.find("grouped_gemmm"), std::string::npos) << c.error;
  EXPECT_NE(c.error.find("unknown plan style"), std::string::npos) << c.error;
}

TEST_F(CaseFileTest, UnknownPlanNameListsTheKnownOnes) {
  const auto c = loadCaseFile(writeCase("p", {{"plan", "no_such_plan"}}));
  EXPECT_NE(c.error.find("unknown plan 'no_such_plan'"), std::string::npos) << c.error;
  EXPECT_NE(c.error.find("ep_tp"), std::string::npos) << c.error;
}

TEST_F(CaseFileTest, MeshNotCoveringTheWorldIsAnError) {
  const auto c = loadCaseFile(writeCase("w", {{"world_size", 4}, {"mesh", {{"ep", 3}}}}));
  EXPECT_NE(c.error.find("covers 3 ranks but world_size is 4"), std::string::npos) << c.error;
}

TEST_F(CaseFileTest, ExpertsNotDivisibleByEpIsAnError) {
  // tiny_moe has 8 experts; 8 % 3 != 0.
  const auto c = loadCaseFile(writeCase("x", {{"world_size", 3}, {"mesh", {{"ep", 3}}}}));
  EXPECT_NE(c.error.find("num_experts 8 of the model is not divisible by the ep size 3"), std::string::npos) << c.error;
}

TEST_F(CaseFileTest, MissingToleranceIsAnError) {
  const auto c = loadCaseFile(writeCase("t", {{"dtypes", {"fp32", "bf16"}}}));
  EXPECT_NE(c.error.find("no tolerance for dtype 'bf16'"), std::string::npos) << c.error;
  // A tolerance without its tensor metric is a schema violation.
  const auto d = loadCaseFile(writeCase("t2", {{"tolerances", {{"fp32", {{"loss_abs", 1e-5}, {"rtol", nullptr}, {"atol", nullptr}}}}}}));
  EXPECT_NE(d.error.find("/tolerances/fp32"), std::string::npos) << d.error;
}

TEST_F(CaseFileTest, ExpectedPlacementsAreCheckedAgainstThePlan) {
  const auto c = loadCaseFile(writeCase("e", {{"expect", {{"placements", {{{"param", "model.nope"}}}}}}}));
  EXPECT_NE(c.error.find("model.nope"), std::string::npos) << c.error;
  const auto d = loadCaseFile(writeCase("f", {{"expect", {{"placements", {{{"param", "model.norm.weight"}, {"placements", {"Replicate()", "Replicate()"}}}}}}}}));
  EXPECT_NE(d.error.find("2 placements for a mesh of 1 dims"), std::string::npos) << d.error;
}

// Plug-in names are checked against the registries (the schema leaves them
// open): the error names the case file and the unknown name and lists the
// registered ones.
TEST_F(CaseFileTest, UnknownCheckIsAnErrorListingTheRegisteredOnes) {
  const auto path = writeCase("k", {{"expect", {{"checks", {"parity", "parityy"}}}}});
  const auto c = loadCaseFile(path);
  EXPECT_TRUE(c.runs.empty());
  EXPECT_EQ(c.error.rfind(path + ": expect.checks: unknown check 'parityy' (known: ", 0), 0u) << c.error;
  for (const char* known : {"communication", "expected_placements", "fsdp_gather_volume", "gradient_scale",
                            "measured_memory", "memory", "params_changed", "parity", "placement",
                            "wrapper_communication", "zero3_partition", "expert_uniqueness"})
    EXPECT_NE(c.error.find(known), std::string::npos) << known << ": " << c.error;
  // Every registered check is accepted, not only the four the schema once listed.
  const auto d = loadCaseFile(writeCase("k2", {{"expect", {{"checks", {"gradient_scale", "measured_memory"}}}}}));
  EXPECT_EQ(d.error, "");
}

TEST_F(CaseFileTest, UnknownWrapperIsAnErrorListingTheRegisteredOnes) {
  const auto path = writeCase("w1", {{"wrapper", "fdsp"}});
  const auto c = loadCaseFile(path);
  EXPECT_EQ(c.error, path + ": wrapper: unknown data-parallel wrapper 'fdsp' (known: fsdp, none, zero3)");
  const auto p2 = writeCase("w2", {{"wrapper", {{"kind", "zero2"}}}});
  EXPECT_EQ(loadCaseFile(p2).error, p2 + ": wrapper.kind: unknown data-parallel wrapper 'zero2' (known: fsdp, none, zero3)");
  const auto p3 = writeCase("w3", {{"matrix", {{"wrapper", {"none", "zero4"}}}}});
  EXPECT_EQ(loadCaseFile(p3).error, p3 + ": matrix.wrapper: unknown data-parallel wrapper 'zero4' (known: fsdp, none, zero3)");
}

TEST_F(CaseFileTest, ExpectedPlacementsAlwaysDecideUnderACheckSelection) {
  const auto c = loadCaseFile(writeCase("s", {{"expect", {{"checks", {"parity"}},
                                                          {"placements", {{{"param", "model.norm.weight"}}}}}}}));
  ASSERT_EQ(c.error, "");
  EXPECT_EQ(c.runs[0].checks, (std::vector<std::string>{"parity", "expected_placements", "finite"}));
}

TEST_F(CaseFileTest, TheFiniteCheckAlwaysDecidesUnderACheckSelection) {
  const auto c = loadCaseFile(writeCase("f", {{"expect", {{"checks", {"communication"}}}}}));
  ASSERT_EQ(c.error, "");
  EXPECT_EQ(c.runs[0].checks, (std::vector<std::string>{"communication", "finite"}));
  const auto all = loadCaseFile(writeCase("f2", nlohmann::json::object()));  // no selection: every check decides
  ASSERT_EQ(all.error, "");
  EXPECT_TRUE(all.runs[0].checks.empty());
}

TEST(ShippedCases, EveryCaseFileIsValid) {
  const auto files = findCaseFiles({defaultCasesDir()});
  ASSERT_GE(files.size(), 10u);
  std::set<std::string> seen;
  for (const auto& f : files) {
    const auto c = loadCaseFile(f);
    EXPECT_EQ(c.error, "") << f;
    for (const auto& r : c.runs) EXPECT_TRUE(seen.insert(r.id).second) << "duplicate run id " << r.id;
  }
}

}  // namespace
}  // namespace moe::cases
