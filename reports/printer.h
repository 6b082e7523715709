#pragma once
// Report printers: plug-ins that turn one Report (report.h) into one file.
//
// How to add a printer: write reports/printers/<name>_printer.cpp with a
// class deriving from ReportPrinter and a factory `std::unique_ptr<ReportPrinter>
// make<Name>Printer()`, add the file to reports/CMakeLists.txt and one
// X(make<Name>Printer) line to MOE_REPORT_PRINTERS in printer_registry.cpp.
//
// Contract: print() writes the whole document for every run of the report,
// whatever its status (an `error` run shows its reason in every format); it
// never reads anything but the Report.
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "reports/report.h"

namespace moe::reports {

class ReportPrinter {
 public:
  virtual ~ReportPrinter() = default;
  virtual std::string name() const = 0;      // "json", "md", "html", "junit"
  virtual std::string fileName() const = 0;  // "report.json", ...
  virtual void print(const Report& report, std::ostream& os) const = 0;
};

// Every registered printer, in registration order.
const std::vector<std::unique_ptr<ReportPrinter>>& printers();
// Writes every printer's file into `dir` (created); returns the paths.
std::vector<std::string> writeReports(const Report& report, const std::string& dir);

// Shared helpers of the text printers.
std::string formatDouble(double x);  // "4.77e-07", "0.25", "3.1"
std::string formatSeconds(double s); // "3.1 s"
std::string formatBytes(double b);   // "812 B", "12.5 KiB", "3.25 MiB"
// "12.5 / 12.5 / 12.1 / 12.1 KiB": per-rank byte counts in one unit.
std::string formatBytesPerRank(const std::vector<double>& bytes);

}  // namespace moe::reports
