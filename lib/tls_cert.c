#include "tls_cert.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <uv.h>

#include "internal.h"
#include "natproxy/error.h"

/* A self-signed certificate is trusted by its fingerprint, not its dates; a short validity would
 * only make every client fail on the day it ends. */
#define CERT_DAYS 36500

int np__tls_state_dir(char *out, size_t len) {
  const char *v = getenv("STATE_DIRECTORY");
  int n;

  if (v != NULL && *v != '\0') {
    size_t first = strcspn(v, ":"); /* systemd lists one per StateDirectory= entry */
    n = snprintf(out, len, "%.*s", (int)first, v);
  } else if (geteuid() == 0) {
    n = snprintf(out, len, "/var/lib/natproxy");
  } else if ((v = getenv("XDG_STATE_HOME")) != NULL && *v == '/') {
    n = snprintf(out, len, "%s/natproxy", v);
  } else if ((v = getenv("HOME")) != NULL && *v == '/') {
    n = snprintf(out, len, "%s/.local/state/natproxy", v);
  } else {
    return UV_ENOENT;
  }
  return n > 0 && (size_t)n < len ? 0 : UV_ENAMETOOLONG;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* err = the message, then why: OpenSSL's last error, else errno's. */
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  unsigned long e = ERR_peek_last_error();
  char ssl[200] = "";
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(err, errlen, fmt, ap);
  va_end(ap);

  if (e != 0)
    ERR_error_string_n(e, ssl, sizeof(ssl));
  else if (errno != 0)
    snprintf(ssl, sizeof(ssl), "%s", strerror(errno));
  if (ssl[0] != '\0' && n > 0 && (size_t)n < errlen)
    snprintf(err + n, errlen - (size_t)n, ": %s", ssl);
  ERR_clear_error();
  return NP_ECONFIG;
}

/* mkdir -p, the last component 0700: it holds a private key. */
static int make_dirs(char *path) {
  struct stat st;

  for (char *p = path + 1; *p != '\0'; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
      *p = '/';
      return -1;
    }
    *p = '/';
  }
  if (mkdir(path, 0700) != 0 && errno != EEXIST)
    return -1;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

static int load(const char *cert_path, const char *key_path, X509 **cert, EVP_PKEY **key, char *err,
                size_t errlen) {
  FILE *f;

  errno = 0;
  if ((f = fopen(cert_path, "r")) == NULL)
    return fail(err, errlen, "cannot read TLS certificate %s", cert_path);
  *cert = PEM_read_X509(f, NULL, NULL, NULL);
  fclose(f);
  if (*cert == NULL)
    return fail(err, errlen, "%s is not a PEM certificate", cert_path);
  errno = 0;
  if ((f = fopen(key_path, "r")) == NULL) {
    X509_free(*cert);
    return fail(err, errlen, "cannot read TLS key %s", key_path);
  }
  *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  fclose(f);
  if (*key == NULL) {
    X509_free(*cert);
    return fail(err, errlen, "%s is not a PEM private key (or needs a passphrase)", key_path);
  }
  if (X509_check_private_key(*cert, *key) != 1) {
    X509_free(*cert);
    EVP_PKEY_free(*key);
    return fail(err, errlen, "the key in %s does not belong to the certificate", key_path);
  }
  return 0;
}

static X509 *self_signed(EVP_PKEY *key) {
  X509 *x = X509_new();
  BIGNUM *serial = BN_new();
  X509_NAME *name;
  int ok;

  ok = x != NULL && serial != NULL && X509_set_version(x, 2) &&
       BN_rand(serial, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
       BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) != NULL &&
       X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
       X509_time_adj_ex(X509_getm_notAfter(x), CERT_DAYS, 0, NULL) != NULL &&
       X509_set_pubkey(x, key) && (name = X509_get_subject_name(x)) != NULL &&
       X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"np-server", -1,
                                  -1, 0) &&
       X509_set_issuer_name(x, name) && X509_sign(x, key, EVP_sha256()) > 0;
  BN_free(serial);
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

/* Write through a temporary file and rename, so a crash never leaves half a key behind. */
static int write_pem(const char *path, mode_t mode, X509 *cert, EVP_PKEY *key) {
  char tmp[4200];
  FILE *f;
  int fd, ok;

  if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
    return -1;
  unlink(tmp);
  if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) < 0)
    return -1;
  if ((f = fdopen(fd, "w")) == NULL) {
    close(fd);
    return -1;
  }
  ok = cert != NULL ? PEM_write_X509(f, cert) : PEM_write_PrivateKey(f, key, NULL, NULL, 0, 0, 0);
  ok = ok && fflush(f) == 0 && fsync(fd) == 0;
  if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return -1;
  }
  return 0;
}

int np__tls_identity(const char *dir, const char *cert_path, const char *key_path, X509 **cert,
                     EVP_PKEY **key, int *created, char *err, size_t errlen) {
  char d[4096], cp[4200], kp[4200];

  *created = 0;
  if (cert_path[0] != '\0' || key_path[0] != '\0') {
    if (cert_path[0] == '\0' || key_path[0] == '\0')
      return fail(err, errlen, "tls_cert and tls_key go together");
    return load(cert_path, key_path, cert, key, err, errlen);
  }
  if (np__strlcpy(d, dir, sizeof(d)) != 0)
    return fail(err, errlen, "state directory name too long: %s", dir);
  snprintf(cp, sizeof(cp), "%s/server.crt", d);
  snprintf(kp, sizeof(kp), "%s/server.key", d);
  if (access(cp, F_OK) == 0 || access(kp, F_OK) == 0)
    return load(cp, kp, cert, key, err, errlen);

  errno = 0;
  if (make_dirs(d) != 0)
    return fail(err, errlen, "cannot create the state directory %s (set tls_dir)", d);
  if ((*key = EVP_EC_gen("P-256")) == NULL)
    return fail(err, errlen, "cannot generate a key for %s", kp);
  if ((*cert = self_signed(*key)) == NULL) {
    EVP_PKEY_free(*key);
    return fail(err, errlen, "cannot create a certificate for %s", cp);
  }
  /* The key first: a certificate without its key would be useless on the next start. */
  errno = 0;
  if (write_pem(kp, 0600, NULL, *key) != 0 || write_pem(cp, 0644, *cert, NULL) != 0) {
    unlink(kp);
    X509_free(*cert);
    EVP_PKEY_free(*key);
    return fail(err, errlen, "cannot write the TLS identity into %s (set tls_dir)", d);
  }
  *created = 1;
  return 0;
}
