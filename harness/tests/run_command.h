#pragma once
// Test helper: run a shell command, capturing its stdout and stderr together
// and its exit status (128 + signal for a command killed by a signal), as a
// user at a terminal would see it. Shared by the CLI-level tests.
#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace moe::testing {

struct Proc {
  int code = -1;    // -1: the command could not be started
  std::string out;  // stdout and stderr
};

inline Proc runCommand(const std::string& cmd) {
  Proc p;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return p;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) p.out.append(buf, n);
  const int st = pclose(f);
  p.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return p;
}

inline bool has(const Proc& p, const std::string& part) { return p.out.find(part) != std::string::npos; }

}  // namespace moe::testing
