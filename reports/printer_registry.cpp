// The report printers. How to add one: see printer.h; one X(...) line here.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "harness/common/error.h"
#include "reports/printer.h"

#define MOE_REPORT_PRINTERS(X) \
  X(makeJsonPrinter)           \
  X(makeMarkdownPrinter)       \
  X(makeHtmlPrinter)           \
  X(makeJunitPrinter)

namespace moe::reports {

#define MOE_DECLARE_PRINTER(f) std::unique_ptr<ReportPrinter> f();
MOE_REPORT_PRINTERS(MOE_DECLARE_PRINTER)
#undef MOE_DECLARE_PRINTER

const std::vector<std::unique_ptr<ReportPrinter>>& printers() {
  static const std::vector<std::unique_ptr<ReportPrinter>> all = [] {
    std::vector<std::unique_ptr<ReportPrinter>> v;
#define MOE_ADD_PRINTER(f) v.push_back(f());
    MOE_REPORT_PRINTERS(MOE_ADD_PRINTER)
#undef MOE_ADD_PRINTER
    return v;
  }();
  return all;
}

std::vector<std::string> writeReports(const Report& report, const std::string& dir) {
  std::filesystem::create_directories(dir);
  std::vector<std::string> paths;
  for (const auto& p : printers()) {
    const std::string path = dir + "/" + p->fileName();
    const std::string tmp = path + ".tmp";
    {
      std::ofstream os(tmp);
      if (!os) fail("cannot write ", tmp);
      p->print(report, os);
    }
    std::filesystem::rename(tmp, path);
    paths.push_back(path);
  }
  return paths;
}

std::string formatDouble(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", x);
  return buf;
}

std::string formatSeconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", s);
  return buf;
}

}  // namespace moe::reports
