// The life of orchrun serve: start (load, resume, listen, watch, arm), the periodic takeover of
// runs whose owner died, and the graceful shutdown.
#pragma once
#include <functional>
#include <string>

namespace orch {

struct ServerContext;
struct RunSummary;

// Loads the pipelines, resumes unfinished runs, listens, watches the directory, arms the
// schedules. False with *err (nothing listening) when it cannot.
bool start_server(ServerContext& c, std::string* err);
// Takes over the unfinished runs whose owner process is gone (at start, then every
// kOwnerCheckMs).
void resume_unfinished(ServerContext& c);
// Logs a run that failed (the scheduler's on_run_finished).
void log_run_finished(ServerContext& c, const RunSummary& s);
// See Server::shutdown.
void shutdown_server(ServerContext& c, std::function<void()> done);
// Closes what is left at once (the server's destructor): runs still active are let go.
void close_server(ServerContext& c);

}  // namespace orch
