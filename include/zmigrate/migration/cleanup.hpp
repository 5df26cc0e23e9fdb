// SPDX-License-Identifier: MPL-2.0
#pragma once
// `zmigrate cleanup`: remove what the ledger still records as live for every migration,
// archived ones included, after crashes or nodes that were down when a command tried. Only what
// can be removed without losing data: the data paths' key lines and private directories, and
// the IP reservations of finished migrations. Rows of the instance's own data (target datasets,
// zone configurations, a removed quota) are reported, never touched: the migration's own
// rollback, abort or finalize decides about those.

#include <zmigrate/migration/context.hpp>

#include <string>
#include <vector>

namespace zmigrate::migration {

struct CleanupItem {
  std::string migration_id;
  std::string vm_uuid;
  std::string kind; // ledger kind
  std::string host;
  std::string name;
  // removed, left (could not be removed: see `why`), kept (not cleanup's to remove), busy (the
  // migration's lease is held by a running command)
  std::string outcome;
  std::string why;
};

struct CleanupResult {
  std::vector<CleanupItem> items;
  // Every row cleanup may remove was removed (nothing "left" or "busy").
  bool complete() const;
};

// Remove every live data-path artefact of every migration whose lease is free, and the IP
// reservations of archived migrations. With `dry_run`, only report what would be done.
CleanupResult cleanup(Context& ctx, bool dry_run);

} // namespace zmigrate::migration
