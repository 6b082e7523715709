// report.json: the Report itself (reportFromJson reads it back).
#include "common/json_number.h"
#include <ostream>

#include "reports/printer.h"

namespace moe::reports {
namespace {

class JsonPrinter : public ReportPrinter {
 public:
  std::string name() const override { return "json"; }
  std::string fileName() const override { return "report.json"; }
  void print(const Report& report, std::ostream& os) const override { os << dumpJson(toJson(report), 1) << "\n"; }
};

}  // namespace

MOE_REGISTER(ReportPrinter, JsonPrinter);

}  // namespace moe::reports
