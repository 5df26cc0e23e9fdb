// SPDX-License-Identifier: MPL-2.0
#pragma once
// One error policy: an exception aborts the command; main() catches once and prints
// "zmigrate: error: <what>: <why>" and returns error.exit_code().

#include <stdexcept>
#include <string>

namespace zmigrate {

// Documented exit codes (man/zmigrate.1 "EXIT STATUS"). Keep in sync with the man page.
enum class ExitCode : int {
  ok = 0,
  failure = 1,       // the operation failed; the migration record says how to go on
  usage = 2,         // bad command line
  not_found = 3,     // unknown instance, compute node, image or migration
  precondition = 4,  // refused: wrong migration phase/state, same CN, no capacity, busy lease
  inventory = 5,     // an inventory API (VMAPI/CNAPI/NAPI/IMGAPI) failed or is unreachable
  remote = 6,        // SSH to a compute node failed (refused, auth, host key mismatch)
  zfs = 7,           // a ZFS command failed on a compute node
  state = 8,         // the state store is unusable (permissions, schema too new)
  config = 9,        // configuration incomplete or invalid
  interrupted = 130, // SIGINT/SIGTERM: the journal says where it stopped
};

// Base of every zmigrate error. `what` names the thing that failed (an instance, a URL, a host),
// `why` says why and, where possible, what to do next.
class Error : public std::runtime_error {
public:
  Error(ExitCode code, std::string what, std::string why)
      : std::runtime_error(what + ": " + why), m_code(code), m_what(std::move(what)),
        m_why(std::move(why)) {}
  ExitCode exit_code() const { return m_code; }
  const std::string& subject() const { return m_what; }
  const std::string& reason() const { return m_why; }

private:
  ExitCode m_code;
  std::string m_what;
  std::string m_why;
};

// Raised for bad arguments or input values; nothing has been changed when it is thrown.
class UsageError : public Error {
public:
  UsageError(std::string what, std::string why)
      : Error(ExitCode::usage, std::move(what), std::move(why)) {}
};

class NotFoundError : public Error {
public:
  NotFoundError(std::string what, std::string why)
      : Error(ExitCode::not_found, std::move(what), std::move(why)) {}
};

class PreconditionError : public Error {
public:
  PreconditionError(std::string what, std::string why)
      : Error(ExitCode::precondition, std::move(what), std::move(why)) {}
};

class ConfigError : public Error {
public:
  ConfigError(std::string what, std::string why)
      : Error(ExitCode::config, std::move(what), std::move(why)) {}
};

// Transient errors may be retried by the caller (connection reset, 5xx, "dataset is busy").
class TransientError : public Error {
public:
  TransientError(ExitCode code, std::string what, std::string why)
      : Error(code, std::move(what), std::move(why)) {}
};

// The text of a JSON library exception without its "[json.exception.parse_error.101] " prefix,
// which says nothing to an operator.
inline std::string json_error_text(const std::exception& e) {
  std::string what = e.what();
  if (!what.empty() && what.front() == '[') {
    const std::size_t end = what.find("] ");
    if (end != std::string::npos) {
      what = what.substr(end + 2);
    }
  }
  return what;
}

} // namespace zmigrate
