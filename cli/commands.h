// orchrun's command line. Exit codes: 0 success; 1 the run failed; 2 usage error or invalid
// pipeline; 3 store or internal error; 130 interrupted (the run was cancelled).
#pragma once

namespace orch::cli {

int main(int argc, char** argv);

}  // namespace orch::cli
