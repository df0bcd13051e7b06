// The SQLite schema's version and mark (its tables are in migrations.cc).
#pragma once
#include <vector>

namespace orch {

// The migrations, in order; migration i takes the schema from version i to i+1.
const std::vector<const char*>& store_migrations();
// 'ORCH' in PRAGMA application_id marks a database as orchrun's.
constexpr int kApplicationId = 0x4f524348;

}  // namespace orch
