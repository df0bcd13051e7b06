// measure: runs a command N times and prints wall time and peak RSS (median, min, max).
//   measure N -- CMD ARGS...
// Uses wait4()'s rusage, so the RSS is the child's own, not this process's.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 4 || strcmp(argv[2], "--") != 0) {
    fprintf(stderr, "usage: measure N -- CMD ARGS...\n");
    return 2;
  }
  int n = atoi(argv[1]);
  std::vector<double> wall;
  std::vector<long> rss;
  for (int i = 0; i < n; i++) {
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid = fork();
    if (pid == 0) {
      freopen("/dev/null", "w", stdout);
      execvp(argv[3], argv + 3);
      _exit(127);
    }
    int status;
    struct rusage ru {};
    wait4(pid, &status, 0, &ru);
    wall.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    rss.push_back(ru.ru_maxrss);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "measure: command failed (status %d)\n", status);
      return 1;
    }
  }
  std::sort(wall.begin(), wall.end());
  std::sort(rss.begin(), rss.end());
  printf(
      "{\"runs\":%d,\"wall_ms\":{\"median\":%.2f,\"min\":%.2f,\"max\":%.2f},"
      "\"rss_kb\":{\"median\":%ld,\"min\":%ld,\"max\":%ld}}\n",
      n, wall[n / 2], wall.front(), wall.back(), rss[n / 2], rss.front(), rss.back());
  return 0;
}
