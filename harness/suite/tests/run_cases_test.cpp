// `moe-harness run` end to end on real gloo jobs: a suite with broken cases
// among good ones still runs the good ones, reports every broken one as
// `error` with its reason in all four formats, and exits non-zero; a hung run
// becomes `error` with the launcher's explanation; `compare` flags a run whose
// loss margin doubled.
#include <gtest/gtest.h>

#include "harness/tests/run_command.h"
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/version.h>

namespace {
namespace fs = std::filesystem;
const std::string kHarness = MOE_HARNESS_BIN;
const std::string kCases = MOE_CASES_DIR;

using moe::testing::Proc;
using moe::testing::runCommand;

std::string readFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class RunCases : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moe_run_cases_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "cases");
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  void writeCase(const std::string& file, const std::string& text) { std::ofstream(dir_ / "cases" / file) << text; }
  // A small valid case: ep=2, 2 steps, fp32.
  std::string goodCase(const std::string& name, const std::string& extra = "") {
    return R"({"name": ")" + name + R"(", "model": ")" + kCases + R"(/configs/tiny_moe.json",
      "world_size": 2, "mesh": {"ep": 2}, "plan": "ep", "dtypes": ["fp32"], "steps": 2,)" + extra + R"(
      "tolerances": {"fp32": {"loss_abs": 1e-5, "rtol": 1e-4, "atol": 1e-6}}})";
  }
  fs::path dir_;
};

TEST_F(RunCases, BrokenCasesAmongGoodOnesAreErrorsInEveryFormat) {
  writeCase("a_good.json", goodCase("a_good"));
  writeCase("b_malformed.json", "{\n  \"name\": \"b\"\n  \"world_size\": 2\n}\n");  // missing comma on line 2
  writeCase("c_schema.json", goodCase("c_schema", R"( "seed": -1,)"));
  writeCase("d_mesh.json", goodCase("d_mesh", R"( "batch_size": 4,)").replace(goodCase("d_mesh", R"( "batch_size": 4,)").find("\"ep\": 2"), 7, "\"ep\": 4"));
  writeCase("e_good.json", goodCase("e_good"));
  const fs::path report = dir_ / "report";
  const Proc p = runCommand(kHarness + " run " + (dir_ / "cases").string() + " --report " + report.string() + " --jobs 2");
  EXPECT_EQ(p.code, 1) << p.out;
  // Progress: the run count, steps, each result and the totals.
  EXPECT_NE(p.out.find("run 1/5 a_good.fp32: step 2/2"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("totals: 2 pass, 0 fail, 3 error, 0 skip of 5 runs"), std::string::npos) << p.out;

  const auto j = nlohmann::json::parse(readFile(report / "report.json"));
  std::map<std::string, nlohmann::json> runs;
  for (const auto& r : j["runs"]) runs[r["id"].get<std::string>()] = r;
  ASSERT_EQ(runs.size(), 5u) << j.dump(1);
  EXPECT_EQ(runs["a_good.fp32"]["status"], "pass");
  EXPECT_EQ(runs["e_good.fp32"]["status"], "pass");
  EXPECT_EQ(runs["a_good.fp32"]["steps"].size(), 2u);
  EXPECT_GT(runs["a_good.fp32"]["seconds"].get<double>(), 0);
  EXPECT_EQ(runs["a_good.fp32"]["environment"]["torch_version"].get<std::string>(), std::string(TORCH_VERSION));
  const std::string malformed = runs["b_malformed"]["reason"];
  EXPECT_EQ(runs["b_malformed"]["status"], "error");
  EXPECT_NE(malformed.find("b_malformed.json:3:"), std::string::npos) << malformed;
  EXPECT_NE(runs["c_schema"]["reason"].get<std::string>().find("/seed: -1 is below the minimum 0"), std::string::npos)
      << runs["c_schema"]["reason"];
  EXPECT_NE(runs["d_mesh"]["reason"].get<std::string>().find("covers 4 ranks but world_size is 2"), std::string::npos)
      << runs["d_mesh"]["reason"];
  EXPECT_EQ(j["totals"]["error"], 3);

  // The same reasons in the other three formats.
  const std::string md = readFile(report / "report.md"), html = readFile(report / "report.html"),
                    junit = readFile(report / "junit.xml");
  for (const std::string& needle : {std::string("b_malformed.json:3:"), std::string("covers 4 ranks but world_size is 2")}) {
    EXPECT_NE(md.find(needle), std::string::npos) << needle;
    EXPECT_NE(html.find(needle), std::string::npos) << needle;
    EXPECT_NE(junit.find(needle), std::string::npos) << needle;
  }
  size_t svgs = 0;
  for (size_t p2 = html.find("<svg"); p2 != std::string::npos; p2 = html.find("<svg", p2 + 1)) ++svgs;
  EXPECT_EQ(svgs, 5u);
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_NE(junit.find("errors=\"3\""), std::string::npos);
}

TEST_F(RunCases, AHungRunIsAnErrorWithTheLaunchersExplanation) {
  // 0.5 s cannot fit 5000 steps (and as many reference steps), of several
  // milliseconds each, however fast the ranks start (forked ranks start in
  // tens of milliseconds): the launcher stops the job and the run becomes an
  // error; the other run still passes.
  std::string hang = goodCase("hang", R"( "timeout": 0.5,)");
  hang.replace(hang.find("\"steps\": 2"), 10, "\"steps\": 5000");
  writeCase("hang.json", hang);
  writeCase("ok.json", goodCase("ok"));
  const fs::path report = dir_ / "report";
  const Proc p = runCommand(kHarness + " run " + (dir_ / "cases").string() + " --report " + report.string());
  EXPECT_EQ(p.code, 1) << p.out;
  const auto j = nlohmann::json::parse(readFile(report / "report.json"));
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][0]["id"], "hang.fp32");
  EXPECT_EQ(j["runs"][0]["status"], "error");
  EXPECT_NE(j["runs"][0]["reason"].get<std::string>().find("timed out after 0.5 s"), std::string::npos) << j["runs"][0];
  EXPECT_EQ(j["runs"][1]["status"], "pass");
}

// `run` forks its ranks from the fork server unless told otherwise, and the
// report says how they started (issue 20 point 1).
TEST_F(RunCases, RanksAreForkedByDefaultAndExecdOnRequest) {
  writeCase("a.json", goodCase("a"));
  for (const std::string spawn : {"", "exec", "fork"}) {
    const fs::path report = dir_ / ("report" + spawn);
    // The default is fork whatever this test's environment chooses.
    const Proc p = runCommand("env -u MOE_HARNESS_SPAWN " + kHarness + " run " + (dir_ / "cases").string() +
                              " --report " + report.string() + (spawn.empty() ? "" : " --spawn " + spawn));
    EXPECT_EQ(p.code, 0) << p.out;
    const auto j = nlohmann::json::parse(readFile(report / "report.json"));
    EXPECT_EQ(j["suite"]["spawn"], spawn.empty() ? "fork" : spawn) << spawn;
    EXPECT_EQ(j["runs"][0]["status"], "pass") << spawn;
  }
  // A misspelt way is a rejected command line (exit 2).
  EXPECT_EQ(runCommand(kHarness + " run " + (dir_ / "cases").string() + " --spawn zygote").code, 2);
}

TEST_F(RunCases, AFailedJobsReasonIsTheRootCauseRanksOwnError) {
  // Rank 0 cannot create the reference cache under /proc and fails on its
  // own; rank 1, waiting for it in a collective, fails with Gloo's
  // "Connection closed by peer" (and may record it first). The reason is
  // rank 0's error, the peer's is secondary (issue 17 point 2).
  writeCase("a.json", goodCase("a"));
  const fs::path report = dir_ / "report";
  const Proc p = runCommand(kHarness + " run " + (dir_ / "cases").string() + " --report " + report.string() +
                            " --reference-cache /proc/moe-harness-no-cache");
  EXPECT_EQ(p.code, 1) << p.out;
  const auto j = nlohmann::json::parse(readFile(report / "report.json"));
  const auto& run = j["runs"][0];
  EXPECT_EQ(run["status"], "error");
  const std::string reason = run["reason"];
  EXPECT_EQ(reason.rfind("rank 0: ", 0), 0u) << reason;
  EXPECT_NE(reason.find("/proc/moe-harness-no-cache"), std::string::npos) << reason;
  EXPECT_EQ(reason.find("Connection closed by peer"), std::string::npos) << reason;
  ASSERT_TRUE(run.contains("failure")) << run;
  EXPECT_EQ(run["failure"]["primary"]["rank"], 0) << run["failure"];
  ASSERT_EQ(run["failure"]["secondary"].size(), 1u) << run["failure"];
  EXPECT_EQ(run["failure"]["secondary"][0]["rank"], 1);
  const std::string cls = run["failure"]["secondary"][0]["class"];
  EXPECT_TRUE(cls == "peer_gone" || cls == "stopped") << cls;
}

TEST_F(RunCases, NcclWithoutGpusIsSkippedNotPassed) {
  writeCase("ok.json", goodCase("ok"));
  const Proc p = runCommand(kHarness + " run " + (dir_ / "cases").string() + " --backend nccl");
  // Exit 77: ctest's SKIP_RETURN_CODE. (On a machine with 2 GPUs this runs.)
  if (p.code != 77) GTEST_SKIP() << "nccl usable here: " << p.out;
  EXPECT_NE(p.out.find("skip ok.fp32: "), std::string::npos) << p.out;
}

// MOE_HARNESS_REQUIRE_GPU=1: the same run is an error (exit 1) naming the
// reason, so a GPU CI with a broken CUDA set-up cannot go green on skips.
TEST_F(RunCases, NcclWithoutGpusFailsWhenGpusAreRequired) {
  writeCase("ok.json", goodCase("ok"));
  const fs::path report = dir_ / "report";
  const Proc p = runCommand("MOE_HARNESS_REQUIRE_GPU=1 " + kHarness + " run " + (dir_ / "cases").string() +
                            " --backend nccl --report " + report.string());
  if (p.code == 0) GTEST_SKIP() << "nccl usable here: " << p.out;
  EXPECT_EQ(p.code, 1) << p.out;
  const auto j = nlohmann::json::parse(readFile(report / "report.json"));
  EXPECT_EQ(j["runs"][0]["status"], "error");
  EXPECT_NE(j["runs"][0]["reason"].get<std::string>().find("MOE_HARNESS_REQUIRE_GPU=1"), std::string::npos)
      << j["runs"][0];
}

// The nccl variants of the case runs declare one GPU per rank to ctest.
TEST_F(RunCases, CtestListDeclaresGpusOfNcclRuns) {
  writeCase("ok.json", goodCase("ok"));
  const fs::path list = dir_ / "tests.cmake";
  const Proc p = runCommand(kHarness + " list " + (dir_ / "cases").string() + " --ctest " + list.string() +
                            " --harness moe-harness --reference-cache /tmp/x");
  ASSERT_EQ(p.code, 0) << p.out;
  const std::string text = readFile(list);
  // goodCase is a 2-rank ep=2 run: two groups of one GPU, nccl only.
  EXPECT_NE(text.find("[==[ok.fp32.nccl]==] PROPERTIES LABELS [==[multigpu"), std::string::npos) << text;
  EXPECT_NE(text.find("RESOURCE_GROUPS [==[2,gpus:1]==]"), std::string::npos) << text;
  const auto gloo = text.find("[==[ok.fp32]==] PROPERTIES");
  ASSERT_NE(gloo, std::string::npos) << text;
  EXPECT_EQ(text.substr(gloo, text.find('\n', gloo) - gloo).find("RESOURCE_GROUPS"), std::string::npos) << text;
}

TEST_F(RunCases, ExpectedPlacementsFailOnAWrongShapeOrPlacement) {
  // ep=2 over 8 experts: rank 1 holds gate_up_proj rows 4..7, local [4, 32, 32], Shard(0).
  const std::string p = R"("model.layers.1.mlp.experts.gate_up_proj")";
  writeCase("a_right.json", goodCase("a_right", R"( "expect": {"placements": [{"param": )" + p +
                                                   R"x(, "ranks": [1], "placements": ["Shard(0)"], "local_shape": [4, 32, 32]}]},)x"));
  writeCase("b_shape.json", goodCase("b_shape", R"( "expect": {"placements": [{"param": )" + p +
                                                   R"(, "local_shape": [8, 32, 32]}]},)"));
  writeCase("c_placement.json", goodCase("c_placement", R"( "expect": {"placements": [{"param": )" + p +
                                                           R"x(, "ranks": [1], "placements": ["Replicate()"]}]},)x"));
  const fs::path report = dir_ / "report";
  const Proc run = runCommand(kHarness + " run " + (dir_ / "cases").string() + " --report " + report.string());
  EXPECT_EQ(run.code, 1) << run.out;
  const auto j = nlohmann::json::parse(readFile(report / "report.json"));
  ASSERT_EQ(j["runs"].size(), 3u);
  EXPECT_EQ(j["runs"][0]["status"], "pass") << j["runs"][0]["reason"];
  EXPECT_EQ(j["runs"][1]["status"], "fail");
  EXPECT_EQ(j["runs"][1]["reason"],
            "expected_placements: rank 0: model.layers.1.mlp.experts.gate_up_proj local shape [4,32,32] vs expected [8,32,32]");
  EXPECT_EQ(j["runs"][2]["status"], "fail");
  EXPECT_EQ(j["runs"][2]["reason"],
            "expected_placements: rank 1: model.layers.1.mlp.experts.gate_up_proj placements [Shard(0)] vs expected [Replicate()]");
}

TEST_F(RunCases, TheReferenceIsComputedOnceAndReused) {
  // Two cases of the same (config, dtype, seed, steps, batch, sequence) on
  // different meshes share one reference; a second suite reuses it too.
  writeCase("a.json", goodCase("a"));
  writeCase("b.json", goodCase("b").replace(goodCase("b").find("\"ep\": 2"), 7, "\"dp\": 2"));
  const std::string cache = (dir_ / "cache").string();
  auto suite = [&](const std::string& name) {
    const Proc p = runCommand(kHarness + " run " + (dir_ / "cases").string() + " --report " + (dir_ / name).string() +
                              " --reference-cache " + cache);
    EXPECT_EQ(p.code, 0) << p.out;
    return nlohmann::json::parse(readFile(dir_ / name / "report.json"));
  };
  const auto first = suite("r1"), second = suite("r2");
  // Every run says where its time went (issue 20 point 4): all eight phases,
  // none negative, and run-plan's phases fit in the job's wall time.
  for (const auto& run : first["runs"]) {
    const auto& t = run["timings"];
    ASSERT_TRUE(t.contains("phases")) << t.dump();
    double inJob = 0;
    for (const char* phase : {"spawn", "rendezvous", "load", "reference", "steps", "checks", "report", "other"}) {
      ASSERT_TRUE(t["phases"].contains(phase)) << phase << " missing in " << t.dump();
      EXPECT_GE(t["phases"][phase].get<double>(), 0.0) << phase;
      if (std::string(phase) != "report") inJob += t["phases"][phase].get<double>();
    }
    EXPECT_GT(t["phases"]["spawn"].get<double>(), 0.0);
    EXPECT_LE(inJob, t["wall_seconds"].get<double>() * 1.001 + 1e-3) << t.dump();
  }
  // The two runs may run concurrently (run's default --jobs): whichever
  // comes first computes the reference, the other waits for it and reads it.
  int computed = 0;
  for (const auto& run : first["runs"]) computed += !run["timings"]["reference_from_cache"].get<bool>();
  EXPECT_EQ(computed, 1) << first["runs"].dump();
  EXPECT_TRUE(second["runs"][0]["timings"]["reference_from_cache"].get<bool>());
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(cache)) entries += e.is_directory();
  EXPECT_EQ(entries, 1u);
  // The cached reference is the computed one, bit for bit.
  for (int s = 0; s < 2; ++s)
    EXPECT_EQ(first["runs"][0]["steps"][s]["reference_loss"].get<double>(),
              second["runs"][0]["steps"][s]["reference_loss"].get<double>());
}

TEST_F(RunCases, CompareFlagsADoubledLossMargin) {
  // Two reports that differ only in the measured loss difference of one run.
  auto report = [](double lossDiff) {
    nlohmann::json parity = {{"check", "parity"}, {"passed", true}, {"explanation", ""},
                             {"measured", {{"loss_max_abs_diff", lossDiff}, {"tolerance", {{"loss_abs", 1e-5}}}}}};
    return nlohmann::json{{"runs", {{{"id", "x.fp32"}, {"status", "pass"}, {"checks", {parity}}},
                                    {{"id", "y.fp32"}, {"status", "pass"}, {"checks", {parity}}}}}};
  };
  auto b = report(2e-6);
  b["runs"][0]["checks"][0]["measured"]["loss_max_abs_diff"] = 4e-6;
  std::ofstream(dir_ / "old.json") << report(2e-6).dump();
  std::ofstream(dir_ / "new.json") << b.dump();
  const Proc p = runCommand(kHarness + " compare " + (dir_ / "old.json").string() + " " + (dir_ / "new.json").string());
  EXPECT_EQ(p.code, 1) << p.out;
  EXPECT_NE(p.out.find("REGRESSION x.fp32: loss margin 0.2 -> 0.4"), std::string::npos) << p.out;
  EXPECT_EQ(p.out.find("y.fp32"), std::string::npos) << p.out;
  const Proc same = runCommand(kHarness + " compare " + (dir_ / "old.json").string() + " " + (dir_ / "old.json").string());
  EXPECT_EQ(same.code, 0) << same.out;
}

TEST_F(RunCases, CtestRegistrationHasBothBackendsAndTheCaseLabels) {
  writeCase("a.json", goodCase("a", R"( "labels": ["nightly"],)"));
  writeCase("b.json", goodCase("b", R"( "labels": ["needs-dp"],)"));
  writeCase("c.json", "{ broken");
  const fs::path out = dir_ / "tests.cmake";
  const Proc p = runCommand(kHarness + " list " + (dir_ / "cases").string() + " --ctest " + out.string() +
                            " --harness /bin/H --reference-cache /cache");
  ASSERT_EQ(p.code, 0) << p.out;
  const std::string t = readFile(out);
  const std::string caseA = (dir_ / "cases" / "a.json").string();
  EXPECT_NE(t.find("add_test([==[a.fp32]==] [==[/bin/H]==] run [==[" + caseA +
                   "]==] --id [==[a.fp32]==] --backend gloo --reference-cache [==[/cache]==])"),
            std::string::npos) << t;
  EXPECT_NE(t.find("set_tests_properties([==[a.fp32]==] PROPERTIES LABELS [==[gloo;nightly]==]"), std::string::npos) << t;
  EXPECT_NE(t.find("set_tests_properties([==[a.fp32.nccl]==] PROPERTIES LABELS [==[multigpu;nightly]==]"), std::string::npos) << t;
  EXPECT_NE(t.find("SKIP_RETURN_CODE 77"), std::string::npos) << t;
  // needs-dp runs are registered but disabled; a broken file is a (failing) test.
  EXPECT_NE(t.find("[==[b.fp32]==] PROPERTIES LABELS [==[gloo;needs-dp]==] TIMEOUT 360 SKIP_RETURN_CODE 77 PROCESSORS 2 DISABLED TRUE"),
            std::string::npos) << t;
  EXPECT_NE(t.find("add_test([==[c]==] [==[/bin/H]==] run"), std::string::npos) << t;
}

TEST_F(RunCases, ValidateAndDescribeWithoutTraining) {
  const Proc v = runCommand(kHarness + " validate " + kCases);
  EXPECT_EQ(v.code, 0) << v.out;
  EXPECT_NE(v.out.find(" 0 invalid"), std::string::npos) << v.out;
  const Proc d = runCommand(kHarness + " describe " + kCases + "/ep2_tp2_moe_tp.json --filter fp32");
  EXPECT_EQ(d.code, 0) << d.out;
  // ep=2 x tp=2: rank 3 is (ep1, tp1) and holds 4 experts' halves: [4, 16, 32].
  EXPECT_NE(d.out.find("3=(ep1,tp1)"), std::string::npos) << d.out;
  EXPECT_NE(d.out.find("model.layers.1.mlp.experts.gate_up_proj | grouped_gemm+moe_tp_gate_up_colwise | [Shard(0), StridedShard(-2, 2)] | 0:[4,16,32]"),
            std::string::npos)
      << d.out;
  writeCase("bad.json", goodCase("bad", R"( "world_size": 3,)").replace(0, 0, ""));
  const Proc bad = runCommand(kHarness + " validate " + (dir_ / "cases").string());
  EXPECT_EQ(bad.code, 1) << bad.out;
}

TEST_F(RunCases, AMalformedFilterIsAUserErrorNamingTheOption) {
  for (const char* cmd : {" list ", " describe "}) {
    const Proc p = runCommand(kHarness + cmd + kCases + "/ep2.json --filter '(fp32'");
    EXPECT_EQ(p.code, 2) << cmd << p.out;  // a user error, not 3 (internal error)
    EXPECT_NE(p.out.find("--filter: '(fp32' is not a valid regular expression"), std::string::npos) << p.out;
  }
}

// `run --device cuda --backend gloo` applies to every case (even one that
// says cpu) and the report records each run's device: here, without a GPU,
// every run is skipped with the reason (exit 77), never passed; with a GPU
// they run on it. On the CPU lane the report says cpu and the run passes.
TEST_F(RunCases, DeviceAndBackendOverridesApplyToEveryCaseAndTheReportRecordsTheDevice) {
  writeCase("a_lane.json", goodCase("a_lane"));
  writeCase("b_lane.json", goodCase("b_lane", R"( "device": "cpu",)"));
  const fs::path report = dir_ / "report";
  const Proc p = runCommand(kHarness + " run " + (dir_ / "cases").string() + " --device cuda --backend gloo --report " +
                            report.string());
  const auto j = nlohmann::json::parse(readFile(report / "report.json"));
  ASSERT_EQ(j["runs"].size(), 2u) << j.dump(1);
  EXPECT_EQ(j["suite"]["device"], "cuda");
  bool allSkipped = true;
  for (const auto& r : j["runs"]) {
    EXPECT_EQ(r["spec"]["device"], "cuda") << r.dump(1);
    EXPECT_EQ(r["spec"]["backend"], "gloo") << r.dump(1);
    const std::string status = r["status"];
    if (status == "skip") {
      EXPECT_NE(r["reason"].get<std::string>().find("CUDA"), std::string::npos) << r.dump(1);
    } else {
      allSkipped = false;
      EXPECT_EQ(status, "pass") << r.dump(1);  // only where a GPU ran it
    }
  }
  EXPECT_EQ(p.code, allSkipped ? 77 : 0) << p.out;

  // The CPU lane (the cases' default): recorded as cpu, passing as before.
  const fs::path cpuReport = dir_ / "cpu_report";
  const Proc c = runCommand(kHarness + " run " + (dir_ / "cases").string() + " --id a_lane.fp32 --report " +
                            cpuReport.string());
  EXPECT_EQ(c.code, 0) << c.out;
  const auto cj = nlohmann::json::parse(readFile(cpuReport / "report.json"));
  ASSERT_EQ(cj["runs"].size(), 1u);
  EXPECT_EQ(cj["runs"][0]["spec"]["device"], "cpu");
  EXPECT_EQ(cj["runs"][0]["status"], "pass");
}

TEST_F(RunCases, NcclWithDeviceCpuIsAnErrorNamingBoth) {
  writeCase("a_nccl.json", goodCase("a_nccl"));
  const fs::path report = dir_ / "report";
  const Proc p = runCommand(kHarness + " run " + (dir_ / "cases").string() + " --device cpu --backend nccl --report " +
                            report.string());
  EXPECT_EQ(p.code, 1) << p.out;
  const auto j = nlohmann::json::parse(readFile(report / "report.json"));
  ASSERT_EQ(j["runs"].size(), 1u);
  EXPECT_EQ(j["runs"][0]["status"], "error");
  EXPECT_NE(j["runs"][0]["reason"].get<std::string>().find("NCCL moves CUDA tensors only"), std::string::npos)
      << j.dump(1);
}

// Issue 20 point 7: `run` writes report.json after every finished run, so a
// suite killed halfway (a nightly past its time limit) leaves a report that
// parses and lists the runs that finished, marked incomplete.
TEST_F(RunCases, KilledHalfwayLeavesAValidReportOfTheFinishedRuns) {
  writeCase("a_quick.json", goodCase("a_quick"));
  // Long enough that it is still training when the test kills the suite.
  writeCase("b_long.json", goodCase("b_long").replace(goodCase("b_long").find("\"steps\": 2"), 10, "\"steps\": 5000"));
  const fs::path report = dir_ / "report";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setpgid(0, 0);
    freopen("/dev/null", "w", stderr);
    execl(kHarness.c_str(), kHarness.c_str(), "run", (dir_ / "cases").c_str(), "--report", report.c_str(), "--jobs",
          "1", static_cast<char*>(nullptr));
    _exit(127);
  }
  setpgid(pid, pid);
  // Wait for the first finished run in report.json (at most 120 s).
  nlohmann::json partial;
  for (int i = 0; i < 1200 && partial.is_null(); ++i) {
    usleep(100 * 1000);
    if (!fs::exists(report / "report.json")) continue;
    auto j = nlohmann::json::parse(readFile(report / "report.json"), nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded() && j.contains("runs") && !j["runs"].empty()) partial = j;
  }
  kill(-pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_FALSE(partial.is_null()) << "no run finished within 120 s";
  EXPECT_TRUE(WIFSIGNALED(st)) << "the suite ended on its own before the kill";
  // What is on disk after the kill parses and is the partial report.
  const auto j = nlohmann::json::parse(readFile(report / "report.json"));
  ASSERT_EQ(j["runs"].size(), 1u) << j.dump(1);
  EXPECT_EQ(j["runs"][0]["id"], "a_quick.fp32");
  EXPECT_EQ(j["runs"][0]["status"], "pass");
  EXPECT_EQ(j["suite"]["complete"], false);
  EXPECT_EQ(j["suite"]["finished_runs"], 1);
  EXPECT_EQ(j["suite"]["runs"], 2);
  EXPECT_EQ(j["totals"]["total"], 1);
  EXPECT_FALSE(fs::exists(report / "report.json.tmp"));
}

// A suite that ends says so: complete, every run finished.
TEST_F(RunCases, AFinishedSuitesReportIsMarkedComplete) {
  writeCase("a_quick.json", goodCase("a_quick"));
  const fs::path report = dir_ / "report";
  const Proc p = runCommand(kHarness + " run " + (dir_ / "cases").string() + " --report " + report.string());
  ASSERT_EQ(p.code, 0) << p.out;
  const auto j = nlohmann::json::parse(readFile(report / "report.json"));
  EXPECT_EQ(j["suite"]["complete"], true);
  EXPECT_EQ(j["suite"]["finished_runs"], 1);
  // The environment names the build (issue 20 point 7).
  for (const char* k : {"compiler", "build_type", "cuda", "nccl", "cuda_driver", "gpus"})
    EXPECT_TRUE(j["environment"].contains(k)) << k << " missing: " << j["environment"].dump();
  EXPECT_EQ(j["environment"]["build_type"], MOE_BUILD_TYPE_EXPECTED);
}

// Issue 20 point 7: `trend` over three real reports: the history of each run,
// no regression while nothing changed; a run that got 10x slower in the
// newest report is flagged (exit 1) in Markdown and in the HTML's charts.
TEST_F(RunCases, TrendOverThreeReportsFlagsASlowdownInTheNewest) {
  writeCase("a_quick.json", goodCase("a_quick"));
  std::vector<std::string> reports;
  for (int i = 0; i < 3; ++i) {
    const fs::path report = dir_ / ("night" + std::to_string(i));
    const Proc p = runCommand(kHarness + " run " + (dir_ / "cases").string() + " --report " + report.string());
    ASSERT_EQ(p.code, 0) << p.out;
    reports.push_back((report / "report.json").string());
  }
  const std::string all = reports[2] + " " + reports[0] + " " + reports[1];  // any order: sorted by creation
  Proc p = runCommand(kHarness + " trend " + all + " --min-seconds 5");
  EXPECT_EQ(p.code, 0) << p.out;
  EXPECT_TRUE(moe::testing::has(p, "3 reports, oldest first; 0 regression(s)")) << p.out;
  EXPECT_TRUE(moe::testing::has(p, "| a_quick.fp32 | pass → pass → pass |")) << p.out;

  auto j = nlohmann::json::parse(readFile(reports[2]));
  j["runs"][0]["seconds"] = j["runs"][0]["seconds"].get<double>() * 10 + 10;
  std::ofstream(reports[2]) << j.dump();
  p = runCommand(kHarness + " trend " + all + " --min-seconds 5 --out " + (dir_ / "trend").string());
  EXPECT_EQ(p.code, 1) << p.out;
  EXPECT_TRUE(moe::testing::has(p, "1 regression(s)")) << p.out;
  EXPECT_TRUE(moe::testing::has(p, "**REGRESSION** time ")) << p.out;
  const std::string html = readFile(dir_ / "trend" / "trend.html");
  EXPECT_NE(html.find("<svg class=\"spark\""), std::string::npos);
  EXPECT_NE(html.find("REGRESSION"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir_ / "trend" / "trend.md"));
  // One report is not a trend: a clear error.
  p = runCommand(kHarness + " trend " + reports[0]);
  EXPECT_NE(p.code, 0);
}

}  // namespace
