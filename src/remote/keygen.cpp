// SPDX-License-Identifier: MPL-2.0
#include <zmigrate/remote/keygen.hpp>
#include <zmigrate/util/error.hpp>

#include <cstdlib>
#include <memory>

#include <libssh/libssh.h>

namespace zmigrate::remote {

namespace {
struct KeyDeleter {
  void operator()(ssh_key k) const { ssh_key_free(k); }
};
struct CharDeleter {
  void operator()(char* p) const { ssh_string_free_char(p); }
};
} // namespace

KeyPair generate_ed25519() {
  ssh_key raw = nullptr;
  if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &raw) != SSH_OK || raw == nullptr) {
    throw Error(ExitCode::failure, "ephemeral key", "libssh could not generate an ed25519 key");
  }
  std::unique_ptr<ssh_key_struct, KeyDeleter> key(raw);
  char* priv = nullptr;
  if (ssh_pki_export_privkey_base64(key.get(), nullptr, nullptr, nullptr, &priv) != SSH_OK) {
    throw Error(ExitCode::failure, "ephemeral key", "libssh could not export the private key");
  }
  std::unique_ptr<char, CharDeleter> priv_guard(priv);
  char* pub = nullptr;
  if (ssh_pki_export_pubkey_base64(key.get(), &pub) != SSH_OK) {
    throw Error(ExitCode::failure, "ephemeral key", "libssh could not export the public key");
  }
  std::unique_ptr<char, CharDeleter> pub_guard(pub);
  KeyPair kp;
  kp.private_openssh = priv;
  if (kp.private_openssh.empty() || kp.private_openssh.back() != '\n') {
    kp.private_openssh += '\n';
  }
  kp.public_line = std::string("ssh-ed25519 ") + pub;
  return kp;
}

} // namespace zmigrate::remote
