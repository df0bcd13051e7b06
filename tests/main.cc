#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <signal.h>

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  return Catch::Session().run(argc, argv);
}
