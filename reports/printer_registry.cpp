// The report printers' registry. How to add a printer (the project's one
// plug-in idiom, common/registry.h): write reports/printers/<name>_printer.cpp
// with a class deriving from ReportPrinter (printer.h), ending with
// `MOE_REGISTER(ReportPrinter, MyPrinter);`. The printers/ folder is globbed
// by CMake: nothing else to touch.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "reports/printer.h"

namespace moe::reports {

std::vector<const ReportPrinter*> printers() { return Registry<ReportPrinter>::instance().all(); }

namespace {

std::string writeOne(const ReportPrinter& p, const Report& report, const std::string& dir) {
  const std::string path = dir + "/" + p.fileName();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream os(tmp);
    if (!os) fail("cannot write ", tmp);
    p.print(report, os);
    os.flush();
    if (!os) fail("cannot write ", tmp);
  }
  std::filesystem::rename(tmp, path);
  return path;
}

}  // namespace

std::vector<std::string> writeReports(const Report& report, const std::string& dir) {
  std::filesystem::create_directories(dir);
  std::vector<std::string> paths;
  for (const ReportPrinter* p : printers()) paths.push_back(writeOne(*p, report, dir));
  return paths;
}

std::string writeReport(const Report& report, const std::string& dir, const std::string& printerName) {
  std::filesystem::create_directories(dir);
  for (const ReportPrinter* p : printers())
    if (p->name() == printerName) return writeOne(*p, report, dir);
  MOE_ASSERT(false, "no report printer named ", printerName);
  return {};
}

std::string formatDouble(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", x);
  return buf;
}

std::string htmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string markdownCell(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '|' ? std::string("\\|") : c == '\n' ? std::string(" ") : std::string(1, c);
  if (out.size() > 300) out = out.substr(0, 297) + "...";
  return out;
}

std::string svgNumber(double x) {
  std::ostringstream os;
  os.precision(1);
  os << std::fixed << x;
  return os.str();
}

std::string formatSeconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", s);
  return buf;
}

namespace {
struct ByteUnit {
  double scale;
  const char* name;
};
ByteUnit unitFor(double b) {
  if (b >= 1024.0 * 1024.0) return {1024.0 * 1024.0, "MiB"};
  if (b >= 1024.0) return {1024.0, "KiB"};
  return {1.0, "B"};
}
std::string scaled(double b, const ByteUnit& u) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), u.scale == 1.0 ? "%.0f" : "%.3g", b / u.scale);
  return buf;
}
}  // namespace

std::string formatBytes(double b) {
  const auto u = unitFor(b);
  return scaled(b, u) + " " + u.name;
}

std::string formatBytesPerRank(const std::vector<double>& bytes) {
  double largest = 0;
  for (double b : bytes) largest = std::max(largest, b);
  const auto u = unitFor(largest);
  std::string out;
  for (double b : bytes) out += (out.empty() ? "" : " / ") + scaled(b, u);
  return out.empty() ? "-" : out + " " + u.name;
}

}  // namespace moe::reports
