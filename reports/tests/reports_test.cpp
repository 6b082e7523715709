// Report printers and compare: every status reaches every format, the HTML
// is self-contained with one chart per run, margins and trends are computed
// from the measured values.
#include <gtest/gtest.h>

#include <regex>
#include <sstream>

#include "reports/compare.h"
#include "reports/printer.h"

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

}  // namespace
}  // namespace moe::reports
