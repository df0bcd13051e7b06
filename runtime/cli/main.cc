#include "runtime/cli/commands.h"
#include "runtime/drivers/http_client.h"

int main(int argc, char** argv) {
  // libcurl's global state, set up before any thread exists.
  orch::http_global_init();
  return orch::cli::main(argc, argv);
}
