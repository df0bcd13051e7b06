#include "cli/commands.h"

#include <signal.h>

#include <cstdio>
#include <stdexcept>

#include "cli/common.h"

namespace orch::cli {
namespace {

const char kUsage[] = R"(orchrun — workflow runtime for operations pipelines

Usage:
  orchrun FILE.lua|FILE.json [--input JSON | --input @file.json] [--db PATH] [--json]
                                     run a pipeline once and exit (0 succeeded, 1 failed)
  orchrun FILE.lua --idempotency-key KEY
                                     start at most one run per pipeline and key
  orchrun resume RUN_ID | --all      continue runs whose process stopped (crash, kill -9):
                                     stored successes are reused, the rest runs again
  orchrun cancel RUN_ID [--reason TEXT]
                                     cancel a run, also one owned by another orchrun process
  orchrun retry RUN_ID               continue a failed or cancelled run from its failed nodes,
                                     reusing what succeeded, as the run's next attempt
  orchrun approve RUN_ID NODE --as NAME [--comment TEXT]
  orchrun reject  RUN_ID NODE --as NAME [--comment TEXT]
                                     decide an approval gate (o.approve); then orchrun resume
  orchrun signal RUN_ID NAME [--data JSON | --data @file.json] [--as NAME]
                                     deliver a signal to a run waiting for it (o.wait); the
                                     payload (default null) is the waiting step's output
  orchrun validate FILE...           load and check pipelines without running them
  orchrun graph FILE [--format mermaid|dot]
                                     print the pipeline's graph
  orchrun runs [--status S] [--pipeline P] [--stage S] [--since 24h|RFC3339|unix-ms] [--limit N] [--json]
                                     list recent runs
  orchrun inspect RUN_ID [--json]    timeline of a run: nodes, attempts, durations, errors
  orchrun serve [DIR] [--listen 127.0.0.1:8080] [--db PATH] [--token-file FILE]
                [--max-body 1MiB] [--grace 10s]
                                     host the pipelines of DIR (default: pipelines/) behind
                                     webhooks, schedules and the HTTP API; reloads changed files
  orchrun logs RUN_ID [--follow] [--server URL] [--json]
                                     the events of a run; --follow streams them from a server
                                     (default $ORCHRUN_SERVER, else http://127.0.0.1:8080)
  orchrun doctor [DIR] [--db PATH] [--listen ADDR] [--token-file F] [--secrets F] [--full]
                                     check the set-up serve would run with: the store (orchrun's,
                                     schema, quick_check; --full: integrity_check), free space,
                                     secrets and token file modes, libcurl, tzdata, every
                                     pipeline of DIR, the listen address; exit 1 on a failure
  orchrun --version | --help

Options:
  --db PATH        the SQLite database (default: $ORCHRUN_DB, else
                   $XDG_STATE_HOME/orchrun/orchrun.db, else ~/.local/state/orchrun/orchrun.db)
  --input JSON     the pipeline input, inline or @file.json (default: {})
  --json           machine-readable output on stdout
  --allow LIBS     let pipelines use io, os, ffi or debug (comma-separated); off by default
  --secrets FILE   NAME=value lines for o.secret, mode 0600 (default: $ORCHRUN_SECRETS_FILE);
                   $ORCHRUN_SECRET_<NAME> wins over the file
  --sync full      fsync every commit (survives power loss, not only a crash of orchrun)
  --progress MODE  tty | plain | none (default: tty on a terminal, plain otherwise)
  --quiet          no live view, and no summary unless the run fails (then on stderr)
  --token-file F   serve: the bearer token API calls must present (default: $ORCHRUN_TOKEN);
                   required to listen beyond loopback. logs --follow sends $ORCHRUN_TOKEN

Exit codes: 0 succeeded, 1 run failed, 2 usage error, invalid pipeline or unknown run,
            3 store or internal error, 4 stopped at an approval gate or a wait for a signal
            (awaiting_approval, waiting),
            130/143 interrupted by SIGINT/SIGTERM (the runs are cancelled; the process
            exits within 10 s of the signal whatever the pipeline does).
)";

}  // namespace

int dispatch(int argc, char** argv);

int main(int argc, char** argv) {
  // A child that closes its stdin early must not kill us with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  try {
    return dispatch(argc, argv);
  } catch (const std::exception& e) {
    // Internals report errors as values; this is the last line for what slipped through
    // (e.g. a JSON type error on a hand-edited store).
    fprintf(stderr, "orchrun: internal error: %s\n", e.what());
    return kExitInternal;
  }
}

int dispatch(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  if (a.has("--version")) {
    printf("orchrun %s\n", ORCHRUN_VERSION);
    return kExitOk;
  }
  if (a.has("--help") || (a.command.empty() && a.errors.empty())) {
    fputs(kUsage, a.command.empty() && !a.has("--help") ? stderr : stdout);
    return a.has("--help") ? kExitOk : kExitUsage;
  }
  // An empty --db would make SQLite use a private temporary database: the run would "succeed"
  // and leave no record anywhere.
  if (a.has("--db") && a.get("--db").empty()) a.errors.push_back("--db needs a non-empty path");
  if (!a.errors.empty()) {
    for (auto& e : a.errors) fprintf(stderr, "orchrun: %s\n", e.c_str());
    fprintf(stderr, "run 'orchrun --help' for usage\n");
    return kExitUsage;
  }
  if (a.command == "run") return cmd_run(a);
  if (a.command == "resume") return cmd_resume(a);
  if (a.command == "cancel") return cmd_cancel(a);
  if (a.command == "retry") return cmd_retry(a);
  if (a.command == "approve" || a.command == "reject") return cmd_decide(a);
  if (a.command == "signal") return cmd_signal(a);
  if (a.command == "validate") return cmd_validate(a);
  if (a.command == "graph") return cmd_graph(a);
  if (a.command == "runs") return cmd_runs(a);
  if (a.command == "inspect") return cmd_inspect(a);
  if (a.command == "serve") return cmd_serve(a);
  if (a.command == "logs") return cmd_logs(a);
  if (a.command == "doctor") return cmd_doctor(a);
  return kExitUsage;
}

}  // namespace orch::cli
