#pragma once
// Report printers: plug-ins that turn one Report (report.h) into one file.
//
// How to add a printer (the project's one plug-in idiom, common/registry.h):
// write reports/printers/<name>_printer.cpp with a class deriving from
// ReportPrinter, ending with `MOE_REGISTER(ReportPrinter, MyPrinter);`. The
// printers/ folder is globbed by CMake: nothing else to touch.
//
// Contract: print() writes the whole document for every run of the report,
// whatever its status (an `error` run shows its reason in every format); it
// never reads anything but the Report.
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "common/registry.h"
#include "reports/report.h"

namespace moe::reports {

class ReportPrinter {
 public:
  static constexpr const char* kPluginKind = "report printer";
  virtual ~ReportPrinter() = default;
  virtual std::string name() const = 0;      // "json", "md", "html", "junit"
  virtual std::string fileName() const = 0;  // "report.json", ...
  virtual void print(const Report& report, std::ostream& os) const = 0;
};

// Every registered printer, sorted by name.
std::vector<const ReportPrinter*> printers();
// Writes every printer's file into `dir` (created); returns the paths.
std::vector<std::string> writeReports(const Report& report, const std::string& dir);
// Writes one printer's file (name(): "json", ...) into `dir`, atomically:
// a temporary file renamed over the old one, so a reader (or a killed
// writer) never sees half a file. Returns the path.
std::string writeReport(const Report& report, const std::string& dir, const std::string& printerName);

// Shared helpers of the text printers.
std::string formatDouble(double x);  // "4.77e-07", "0.25", "3.1"
std::string formatSeconds(double s); // "3.1 s"
std::string formatBytes(double b);   // "812 B", "12.5 KiB", "3.25 MiB"
// "12.5 / 12.5 / 12.1 / 12.1 KiB": per-rank byte counts in one unit.
std::string formatBytesPerRank(const std::vector<double>& bytes);
// Text for HTML: & < > " escaped.
std::string htmlEscape(const std::string& s);
// An SVG coordinate: fixed, one decimal ("12.5").
std::string svgNumber(double x);
// A Markdown table cell: newlines become spaces, '|' is escaped, longer than
// 300 characters is cut with "...".
std::string markdownCell(const std::string& s);

}  // namespace moe::reports
