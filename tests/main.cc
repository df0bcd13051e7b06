#define CATCH_CONFIG_RUNNER
#include <signal.h>

#include <catch2/catch.hpp>

#include "runtime/drivers/http_client.h"

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  orch::http_global_init();
  return Catch::Session().run(argc, argv);
}
