// Report printers and compare: every status reaches every format, the HTML
// is self-contained with one chart per run, margins and trends are computed
// from the measured values.
#include <gtest/gtest.h>

#include <regex>
#include <sstream>

#include "reports/compare.h"
#include "reports/printer.h"
#include "reports/trend.h"

namespace moe::reports {
namespace {

CheckOutcome parity(bool passed, double lossDiff, double gradScore) {
  CheckOutcome c;
  c.check = "parity";
  c.passed = passed;
  c.explanation = passed ? "within tolerance" : "loss differs";
  c.measured = {{"loss_max_abs_diff", lossDiff},
                {"tolerance", {{"loss_abs", 1e-5}}},
                {"grads", {{"worst", {{"score", gradScore}}}}}};
  return c;
}

RunResult run(const std::string& id, Status s, double lossDiff = 2e-6) {
  RunResult r;
  r.id = id;
  r.caseName = id.substr(0, id.find('.'));
  r.status = s;
  r.spec = {{"world_size", 2}, {"mesh", {{"ep", 2}}}, {"dtype", "fp32"}, {"steps", 3}};
  r.lossTolerance = 1e-5;
  if (s == Status::kPass || s == Status::kFail) {
    for (int i = 1; i <= 3; ++i) r.steps.push_back({i, 4.0 - 0.1 * i + (s == Status::kFail ? 1e-3 : 0), 4.0 - 0.1 * i});
    r.checks.push_back(parity(s == Status::kPass, lossDiff, 0.25));
  }
  if (s == Status::kFail) r.reason = "parity: loss differs by 1e-3";
  if (s == Status::kError) r.reason = "cases/broken.json:3:17: malformed JSON <& \"quoted\">";
  if (s == Status::kSkip) r.reason = "no GPU";
  return r;
}

Report sample() {
  Report rep;
  rep.created = "2026-01-01T00:00:00Z";
  rep.environment = {{"torch_version", "1.13.0"}, {"backend", "gloo"}, {"git_revision", "abc"}, {"host", "h"}};
  rep.runs = {run("ok.fp32", Status::kPass), run("bad.fp32", Status::kFail), run("broken", Status::kError),
              run("gpu.fp32", Status::kSkip)};
  return rep;
}

std::string printed(const std::string& name, const Report& r) {
  for (const auto& p : printers())
    if (p->name() == name) {
      std::ostringstream os;
      p->print(r, os);
      return os.str();
    }
  ADD_FAILURE() << "no printer " << name;
  return "";
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

TEST(Printers, AllFourAreRegistered) {
  std::vector<std::string> names;
  for (const auto& p : printers()) names.push_back(p->name());
  EXPECT_EQ(names, (std::vector<std::string>{"html", "json", "junit", "md"}));  // sorted by name
}

TEST(Printers, JsonRoundTrips) {
  const Report rep = sample();
  const Report back = reportFromJson(nlohmann::json::parse(printed("json", rep)));
  ASSERT_EQ(back.runs.size(), 4u);
  EXPECT_EQ(back.runs[2].status, Status::kError);
  EXPECT_EQ(back.runs[2].reason, rep.runs[2].reason);
  EXPECT_EQ(back.runs[0].steps.size(), 3u);
  EXPECT_DOUBLE_EQ(back.runs[0].steps[2].referenceLoss, 4.0 - 0.3);
  const auto j = nlohmann::json::parse(printed("json", rep));
  EXPECT_EQ(j["totals"]["error"], 1);
  EXPECT_EQ(j["totals"]["total"], 4);
}

TEST(Printers, HtmlIsSelfContainedWithOneChartPerRun) {
  const std::string html = printed("html", sample());
  EXPECT_EQ(count(html, "<svg"), 4u);
  EXPECT_EQ(count(html, "</svg>"), 4u);
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  // The error's reason appears, escaped.
  EXPECT_NE(html.find("malformed JSON &lt;&amp; &quot;quoted&quot;&gt;"), std::string::npos);
  // Both curves of a run with steps, and the tolerance band.
  EXPECT_NE(html.find("polyline class=\"ref\""), std::string::npos);
  EXPECT_NE(html.find("polyline class=\"run\""), std::string::npos);
  EXPECT_NE(html.find("rect class=\"band\""), std::string::npos);
  // The failing run's |Δloss| (1e-3) is over the tolerance (1e-5): red points.
  EXPECT_EQ(count(html, "circle class=\"over\""), 3u);
  EXPECT_EQ(html.find("<html"), html.find("<html lang"));
  EXPECT_NE(html.find("</html>"), std::string::npos);
}

TEST(Printers, EveryFormatShowsTheErrorReason) {
  const Report rep = sample();
  EXPECT_NE(printed("md", rep).find("cases/broken.json:3:17: malformed JSON"), std::string::npos);
  const std::string junit = printed("junit", rep);
  EXPECT_NE(junit.find("cases/broken.json:3:17: malformed JSON &lt;&amp; &quot;quoted&quot;&gt;"), std::string::npos);
  EXPECT_EQ(count(junit, "<testcase "), 4u);
  EXPECT_EQ(count(junit, "<failure "), 1u);
  EXPECT_EQ(count(junit, "<error "), 1u);
  EXPECT_EQ(count(junit, "<skipped "), 1u);
  EXPECT_NE(junit.find("tests=\"4\" failures=\"1\" errors=\"1\" skipped=\"1\""), std::string::npos);
}

TEST(Phases, SummedOverRunsInPhaseOrderAndShownInMarkdownAndHtml) {
  Report rep = sample();
  rep.runs[0].timings["phases"] = {{"steps", 1.5}, {"spawn", 0.25}, {"report", 0.01}, {"other", 0.1}};
  rep.runs[1].timings["phases"] = {{"steps", 0.5}, {"load", 2.0}};
  const PhaseTotals t = phaseTotals(rep);
  EXPECT_EQ(t.runs, 2);  // the error and the skip have none
  const std::vector<std::pair<std::string, double>> want = {
      {"spawn", 0.25}, {"load", 2.0}, {"steps", 2.0}, {"report", 0.01}, {"other", 0.1}};
  EXPECT_EQ(t.seconds, want);
  EXPECT_EQ(phaseText(rep.runs[0]), "spawn 0.25 s, steps 1.50 s, report 0.01 s, other 0.10 s");
  EXPECT_EQ(phaseText(rep.runs[2]), "");
  EXPECT_NE(printed("md", rep).find("Where the time goes (summed over 2 runs): spawn 0.2 s; load 2.0 s; steps 2.0 s;"),
            std::string::npos);
  const std::string html = printed("html", rep);
  EXPECT_NE(html.find("<h2>Where the time goes</h2>"), std::string::npos);
  EXPECT_NE(html.find("Phases: spawn 0.25 s, steps 1.50 s"), std::string::npos);
  // No phases anywhere: no section rather than an empty one.
  EXPECT_EQ(printed("md", sample()).find("Where the time goes"), std::string::npos);
}

TEST(Margins, MeasuredOverTolerance) {
  const auto m = margins(run("ok.fp32", Status::kPass, 4e-6));
  ASSERT_EQ(m.count("loss"), 1u);
  EXPECT_NEAR(m.at("loss"), 0.4, 1e-12);  // 4e-6 / 1e-5
  EXPECT_DOUBLE_EQ(m.at("grads"), 0.25);
  EXPECT_TRUE(margins(run("broken", Status::kError)).empty());
}

// run-plan's measured_memory as a 2-rank fsdp run writes it.
nlohmann::json measuredMemoryDoc() {
  return {{"per_rank",
           {{{"rank", 0}, {"peak_bytes", 3 * 1024 * 1024}, {"after_last_step_bytes", 1536 * 1024}},
            {{"rank", 1}, {"peak_bytes", 2.5 * 1024 * 1024}, {"after_last_step_bytes", 1024 * 1024}}}},
          {"measured_ratio", 0.625},
          {"declared_ratio", 0.5},
          {"peak_ratio", 1.375}};
}

TEST(MeasuredMemory, ReachesJsonMarkdownAndHtml) {
  Report rep = sample();
  rep.runs[0].spec["wrapper"] = "fsdp";
  rep.runs[0].measuredMemory = measuredMemoryDoc();
  const Report back = reportFromJson(nlohmann::json::parse(printed("json", rep)));
  const auto m = measuredMemory(back.runs[0]);
  ASSERT_EQ(m.ranks(), 2u);
  EXPECT_DOUBLE_EQ(m.peakBytes[1], 2.5 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(m.afterLastBytes[0], 1536 * 1024);
  EXPECT_DOUBLE_EQ(m.measuredRatio, 0.625);
  EXPECT_DOUBLE_EQ(m.declaredRatio, 0.5);
  EXPECT_EQ(measuredMemory(back.runs[1]).ranks(), 0u) << "a run without measured memory has none";
  const std::string md = printed("md", rep);
  EXPECT_NE(md.find("## Measured memory per rank"), std::string::npos);
  EXPECT_NE(md.find("| ok.fp32 | fsdp | 3 / 2.5 MiB | 1.5 / 1 MiB | 0.625 | 1.38 | 0.5 |"), std::string::npos) << md;
  const std::string html = printed("html", rep);
  EXPECT_NE(html.find("peak during a step 3 / 2.5 MiB, after the last step 1.5 / 1 MiB; measured / replicated 0.625 "
                      "(peak 1.38, declared 0.5)"),
            std::string::npos);
  // No section when no run measured memory.
  EXPECT_EQ(printed("md", sample()).find("Measured memory"), std::string::npos);
}

TEST(MeasuredMemory, ByteFormats) {
  EXPECT_EQ(formatBytes(812), "812 B");
  EXPECT_EQ(formatBytes(12.5 * 1024), "12.5 KiB");
  EXPECT_EQ(formatBytes(3.25 * 1024 * 1024), "3.25 MiB");
  EXPECT_EQ(formatBytesPerRank({2048, 512}), "2 / 0.5 KiB");
  EXPECT_EQ(formatBytesPerRank({}), "-");
}

TEST(Compare, FlagsALossMarginThatDoubled) {
  Report a, b;
  a.runs = {run("x.fp32", Status::kPass, 2e-6), run("y.fp32", Status::kPass, 2e-6)};
  b.runs = {run("x.fp32", Status::kPass, 4e-6), run("y.fp32", Status::kPass, 2.5e-6)};
  const auto changes = compareReports(a, b);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].id, "x.fp32");
  EXPECT_TRUE(changes[0].regression);
  EXPECT_NE(changes[0].what.find("loss margin 0.2 -> 0.4"), std::string::npos) << changes[0].what;
  // The reverse direction is a change, not a regression.
  const auto back = compareReports(b, a);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_FALSE(back[0].regression);
}

TEST(Compare, StatusChangesAndMissingRuns) {
  Report a, b;
  a.runs = {run("x.fp32", Status::kPass), run("gone.fp32", Status::kPass)};
  b.runs = {run("x.fp32", Status::kError), run("new.fp32", Status::kPass)};
  const auto changes = compareReports(a, b);
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_EQ(changes[0].what, "status pass -> error");
  EXPECT_TRUE(changes[0].regression);
  EXPECT_EQ(changes[1].id, "new.fp32");
  EXPECT_FALSE(changes[1].regression);
  EXPECT_EQ(changes[2].id, "gone.fp32");
}

TEST(Compare, TinyMarginsAreNotATrend) {
  Report a, b;
  a.runs = {run("x.fp32", Status::kPass, 1e-9)};  // margin 1e-4
  b.runs = {run("x.fp32", Status::kPass, 3e-9)};  // margin 3e-4: tripled, but both below 0.01
  EXPECT_TRUE(compareReports(a, b).empty());
  CompareOptions o;
  o.minMargin = 0;
  EXPECT_EQ(compareReports(a, b, o).size(), 1u);
}

TEST(Printers, EnvironmentAndIncompleteSuiteAreShown) {
  Report r = sample();
  r.environment = {{"torch_version", "2.15.0"}, {"cuda", "13.2"},         {"nccl", "2.30.7"},
                   {"cuda_driver", "none"},     {"gpus", {"H100", "H100"}}, {"compiler", "gcc 12.2.0"},
                   {"build_type", "Release"},   {"backend", "gloo"},      {"git_revision", "abc"}, {"host", "h"}};
  EXPECT_EQ(environmentText(r.environment),
            "libtorch 2.15.0 (CUDA 13.2), NCCL 2.30.7, CUDA driver none, GPUs H100 + H100, gcc 12.2.0, Release, "
            "backend gloo, git abc, host h");
  // An older report without the new fields still prints.
  EXPECT_EQ(environmentText({{"torch_version", "2.9.0"}, {"host", "h"}}), "libtorch 2.9.0, host h");
  r.suite = {{"complete", false}, {"runs", 9}};
  EXPECT_NE(printed("md", r).find("**Incomplete**: the suite was stopped after 4 of 9 runs."), std::string::npos);
  EXPECT_NE(printed("html", r).find("Incomplete: the suite was stopped after 4 of 9 runs."), std::string::npos);
  EXPECT_NE(printed("html", r).find("GPUs H100 + H100"), std::string::npos);
  r.suite["complete"] = true;
  EXPECT_EQ(printed("md", r).find("Incomplete"), std::string::npos);
}

// --- trend over N reports (issue 20 point 7) ---

Report nightly(const std::string& created, std::vector<RunResult> runs) {
  Report r;
  r.created = created;
  r.seconds = 10;
  r.runs = std::move(runs);
  return r;
}
RunResult timed(RunResult r, double seconds) {
  r.seconds = seconds;
  return r;
}

TEST(Trend, StableHistoryHasNoRegression) {
  std::vector<Report> rs;
  for (int i = 0; i < 3; ++i)
    rs.push_back(nightly("2026-01-0" + std::to_string(i + 1), {timed(run("x.fp32", Status::kPass, 2e-6), 3.0 + 0.1 * i)}));
  const Trend t = buildTrend(rs, {"a", "b", "c"});
  ASSERT_EQ(t.runs.size(), 1u);
  EXPECT_EQ(t.regressions(), 0);
  ASSERT_EQ(t.runs[0].points.size(), 3u);
  EXPECT_DOUBLE_EQ(*t.runs[0].points[2]->worstMargin, 0.25);  // max(loss 0.2, grads 0.25)
}

TEST(Trend, FlagsMarginGrowthSlowdownStatusAndMissingRunsInTheNewest) {
  // Given out of order: sorted by creation time.
  const Report r3 = nightly("2026-01-03", {timed(run("margin.fp32", Status::kPass, 8e-6), 3),
                                            timed(run("slow.fp32", Status::kPass), 9.0),
                                            timed(run("status.fp32", Status::kFail), 3)});
  const Report r1 = nightly("2026-01-01", {timed(run("margin.fp32", Status::kPass, 2e-6), 3),
                                            timed(run("slow.fp32", Status::kPass), 3.0),
                                            timed(run("status.fp32", Status::kPass), 3),
                                            timed(run("gone.fp32", Status::kPass), 3)});
  const Report r2 = nightly("2026-01-02", {timed(run("margin.fp32", Status::kPass, 3e-6), 3),
                                            timed(run("slow.fp32", Status::kPass), 3.4),
                                            timed(run("status.fp32", Status::kPass), 3),
                                            timed(run("gone.fp32", Status::kPass), 3)});
  const Trend t = buildTrend({r3, r1, r2}, {"r3", "r1", "r2"});
  EXPECT_EQ(t.sources, (std::vector<std::string>{"r1", "r2", "r3"}));
  std::map<std::string, const RunTrend*> by;
  for (const auto& r : t.runs) by[r.id] = &r;
  ASSERT_EQ(by.size(), 4u);
  EXPECT_EQ(t.regressions(), 4);
  // 0.3 -> 0.8 loss margin (x2.67 >= 2) against the previous report.
  ASSERT_TRUE(by["margin.fp32"]->regression());
  EXPECT_NE(by["margin.fp32"]->flags[0].find("loss margin 0.3 -> 0.8"), std::string::npos) << by["margin.fp32"]->flags[0];
  // 9 s against the median 3.2 s of the earlier two: x2.8, 5.8 s slower.
  ASSERT_TRUE(by["slow.fp32"]->regression());
  EXPECT_NE(by["slow.fp32"]->flags[0].find("time 3.2 s (median of 2) -> 9.0 s"), std::string::npos)
      << by["slow.fp32"]->flags[0];
  EXPECT_NE(by["status.fp32"]->flags[0].find("status pass -> fail"), std::string::npos);
  EXPECT_NE(by["gone.fp32"]->flags[0].find("missing from the newest"), std::string::npos);
  EXPECT_FALSE(by["gone.fp32"]->points[2].has_value());

  std::ostringstream md, html;
  printTrendMarkdown(t, md);
  printTrendHtml(t, html);
  EXPECT_NE(md.str().find("| slow.fp32 | pass → pass → pass | 0.25 → 0.25 → 0.25 | 3.0 s → 3.4 s → 9.0 s | **REGRESSION**"),
            std::string::npos)
      << md.str();
  EXPECT_NE(md.str().find("| gone.fp32 | pass → pass → - |"), std::string::npos) << md.str();
  // One margin chart and one time chart per run, no external resources.
  EXPECT_EQ(count(html.str(), "<svg class=\"spark\""), 8u);
  EXPECT_EQ(html.str().find("http"), std::string::npos);
  EXPECT_EQ(count(html.str(), "class=\"reg\""), 4u);
}

TEST(Trend, SmallOrNoisySlowdownsAreNotFlagged) {
  // x1.5 but only 0.5 s slower: under --min-seconds 1.
  const Trend t = buildTrend({nightly("1", {timed(run("x.fp32", Status::kPass), 1.0)}),
                              nightly("2", {timed(run("x.fp32", Status::kPass), 1.5)})},
                             {"a", "b"});
  EXPECT_EQ(t.regressions(), 0);
  TrendOptions o;
  o.minSeconds = 0.1;
  EXPECT_EQ(buildTrend({nightly("1", {timed(run("x.fp32", Status::kPass), 1.0)}),
                        nightly("2", {timed(run("x.fp32", Status::kPass), 1.5)})},
                       {"a", "b"}, o)
                .regressions(),
            1);
}

TEST(Trend, NeedsTwoReports) {
  EXPECT_THROW(buildTrend({sample()}, {"a"}), std::exception);
}

}  // namespace
}  // namespace moe::reports
