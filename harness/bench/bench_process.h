#pragma once
// Shared by the benchmarks that time whole processes (bench_comm,
// bench_suite): running a command to completion with a timeout, and the
// Python anchor, the pattern the harness replaces: mp.spawn of N processes,
// init_process_group("gloo"), one all_reduce, destroy_process_group.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace moe::bench {

using Clock = std::chrono::steady_clock;

// Exit code 77: this python3 has no usable torch.distributed (a skip).
inline constexpr const char* kPythonScript = R"PY(
import socket, sys
try:
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
except ImportError as e:
    print(e, file=sys.stderr)
    sys.exit(77)
if not (dist.is_available() and dist.is_gloo_available()):
    print("torch.distributed without gloo", file=sys.stderr)
    sys.exit(77)

def run(rank, world_size, port):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world_size)
    t = torch.ones(1)
    dist.all_reduce(t)
    assert t.item() == world_size, t
    dist.destroy_process_group()

if __name__ == "__main__":
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    world_size = int(sys.argv[1])
    mp.spawn(run, args=(world_size, port), nprocs=world_size)
)PY";

struct CommandResult {
  int exitCode = -1;  // 128 + signal when killed; -1 when not started
  std::string output;  // stdout and stderr, interleaved
};

// Runs argv to completion (killed after `timeout`), capturing its output.
inline CommandResult runCommand(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
  CommandResult res;
  char path[] = "/tmp/bench_comm_out_XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) {
    res.output = std::string("mkstemp: ") + strerror(errno);
    return res;
  }
  unlink(path);
  pid_t pid = fork();
  if (pid < 0) {
    res.output = std::string("fork: ") + strerror(errno);
    close(fd);
    return res;
  }
  if (pid == 0) {
    setpgid(0, 0);  // so a timeout kills python's spawned children too
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    fprintf(stderr, "cannot execute %s: %s\n", args[0], strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  auto deadline = Clock::now() + timeout;
  int status = 0;
  while (true) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (Clock::now() > deadline) {
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      res.output = "timed out after " + std::to_string(timeout.count()) + " s\n";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  res.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  lseek(fd, 0, SEEK_SET);
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) res.output.append(buf, n);
  close(fd);
  if (res.output.size() > 2000) res.output = "..." + res.output.substr(res.output.size() - 2000);
  return res;
}

// One run of the Python anchor with `ranks` processes: its wall seconds, or
// an error text (exit 77: no torch.distributed with gloo in `python`).
struct AnchorResult {
  double seconds = 0;
  int exitCode = -1;
  std::string error;
};
inline AnchorResult runPythonAnchor(const std::string& python, int ranks) {
  AnchorResult out;
  char dir[] = "/tmp/bench_py_anchor_XXXXXX";
  if (!mkdtemp(dir)) {
    out.error = "mkdtemp failed";
    return out;
  }
  const std::string script = std::string(dir) + "/spawn_allreduce.py";
  std::ofstream(script) << kPythonScript;
  const auto t0 = Clock::now();
  CommandResult r = runCommand({python, script, std::to_string(ranks)}, std::chrono::seconds(180));
  out.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  out.exitCode = r.exitCode;
  if (r.exitCode == 77) out.error = python + " cannot import torch.distributed with gloo: " + r.output;
  else if (r.exitCode != 0) out.error = "python spawn pattern failed (exit " + std::to_string(r.exitCode) + "): " + r.output;
  unlink(script.c_str());
  rmdir(dir);
  return out;
}

}  // namespace moe::bench
