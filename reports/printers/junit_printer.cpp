// junit.xml: one <testsuite> per case, one <testcase> per run. fail ->
// <failure>, error -> <error>, skip -> <skipped>, each with the reason.
#include <map>
#include <ostream>

#include "reports/printer.h"

namespace moe::reports {
namespace {

std::string xmlEscape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // XML 1.0 forbids most control characters even when escaped.
        if (c < 0x20 && c != '\n' && c != '\t' && c != '\r') out += '?';
        else out += static_cast<char>(c);
    }
  }
  return out;
}

class JunitPrinter : public ReportPrinter {
 public:
  std::string name() const override { return "junit"; }
  std::string fileName() const override { return "junit.xml"; }
  void print(const Report& report, std::ostream& os) const override {
    const Totals t = report.totals();
    std::map<std::string, std::vector<const RunResult*>> byCase;
    std::vector<std::string> order;
    for (const auto& r : report.runs) {
      const std::string c = r.caseName.empty() ? r.id : r.caseName;
      if (!byCase.count(c)) order.push_back(c);
      byCase[c].push_back(&r);
    }
    os << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    os << "<testsuites name=\"moe-harness\" tests=\"" << t.total() << "\" failures=\"" << t.fail << "\" errors=\""
       << t.error << "\" skipped=\"" << t.skip << "\" time=\"" << report.seconds << "\">\n";
    for (const auto& c : order) {
      Report sub;
      for (const auto* r : byCase[c]) sub.runs.push_back(*r);
      const Totals st = sub.totals();
      double secs = 0;
      for (const auto* r : byCase[c]) secs += r->seconds;
      os << "  <testsuite name=\"" << xmlEscape(c) << "\" tests=\"" << st.total() << "\" failures=\"" << st.fail
         << "\" errors=\"" << st.error << "\" skipped=\"" << st.skip << "\" time=\"" << secs << "\">\n";
      for (const auto* r : byCase[c]) {
        os << "    <testcase classname=\"" << xmlEscape(c) << "\" name=\"" << xmlEscape(r->id) << "\" time=\""
           << r->seconds << "\">\n";
        const std::string msg = xmlEscape(r->reason);
        if (r->status == Status::kFail) {
          os << "      <failure message=\"" << msg << "\">";
          for (const auto& ch : r->checks)
            if (!ch.passed) os << xmlEscape(ch.check + ": " + ch.explanation) << "\n";
          os << "</failure>\n";
        } else if (r->status == Status::kError) {
          os << "      <error message=\"" << msg << "\">" << xmlEscape(r->log) << "</error>\n";
        } else if (r->status == Status::kSkip) {
          os << "      <skipped message=\"" << msg << "\"/>\n";
        }
        std::string out;
        for (const auto& ch : r->checks)
          out += ch.check + (ch.passed ? " ok: " : " FAIL: ") + ch.explanation + "\n";
        if (!out.empty()) os << "      <system-out>" << xmlEscape(out) << "</system-out>\n";
        os << "    </testcase>\n";
      }
      os << "  </testsuite>\n";
    }
    os << "</testsuites>\n";
  }
};

}  // namespace

MOE_REGISTER(ReportPrinter, JunitPrinter);

}  // namespace moe::reports
