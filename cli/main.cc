#include "cli/commands.h"

int main(int argc, char** argv) {
  return orch::cli::main(argc, argv);
}
