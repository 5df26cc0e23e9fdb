// SPDX-License-Identifier: MPL-2.0
#pragma once
// Ephemeral SSH key pairs for the CN-to-CN data path. Generated in memory; the private key is
// written only on the source node (by the caller, through stdin of a remote command).

#include <string>

namespace zmigrate::remote {

struct KeyPair {
  std::string private_openssh; // "-----BEGIN OPENSSH PRIVATE KEY-----\n..." (never logged)
  std::string public_line;     // "ssh-ed25519 AAAA..." without comment
};

// A fresh ed25519 key pair. Throws Error(ExitCode::failure) if libssh cannot make one.
KeyPair generate_ed25519();

} // namespace zmigrate::remote
