/* The server's TLS identity: a key and certificate from files the operator names, or a self-signed
 * pair created on first start in the state directory, like an SSH host key. */
#ifndef NP_TLS_CERT_H
#define NP_TLS_CERT_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* Where the identity lives unless configured: $STATE_DIRECTORY (systemd), /var/lib/natproxy for
 * root, else $XDG_STATE_HOME/natproxy or ~/.local/state/natproxy. 0 or UV_ENOENT (no home). */
int np__tls_state_dir(char *out, size_t len);
/* cert_path and key_path both set: load them. Otherwise load dir/server.crt and dir/server.key,
 * creating dir (0700) and the pair when absent; *created says whether it did. The caller owns
 * *cert and *key. Returns 0 or NP_ECONFIG with err saying what is wrong and where. */
int np__tls_identity(const char *dir, const char *cert_path, const char *key_path, X509 **cert,
                     EVP_PKEY **key, int *created, char *err, size_t errlen);

#endif
