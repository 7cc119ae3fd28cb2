#include "tls_sni.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define REC_HANDSHAKE   0x16  /* ContentType handshake (RFC 5246 §6.2.1) */
#define REC_MAX         16384 /* TLSPlaintext.length: at most 2^14 (RFC 8446 §5.1) */
#define HS_CLIENT_HELLO 1     /* HandshakeType client_hello (RFC 8446 §4) */
#define EXT_SERVER_NAME 0     /* ExtensionType server_name (RFC 6066 §3) */
#define NAME_HOST       0     /* NameType host_name (RFC 6066 §3) */
#define LABEL_MAX       63    /* RFC 1035 §2.3.4 */
#define RANDOM_LEN      32    /* ClientHello.random */
#define SESSION_ID_MAX  32    /* legacy_session_id<0..32> */
/* The smallest body that can be valid: version, random, an empty session id, one cipher suite, one
 * compression method. */
#define HELLO_MIN (2 + RANDOM_LEN + 1 + 2 + 2 + 1 + 1)

/* A bounds-checked read position in the whole message. */
typedef struct cursor {
  const unsigned char *p;
  size_t left;
} cursor;

static bool get(cursor *c, int n, size_t *v) {
  if (c->left < (size_t)n)
    return false;
  *v = (size_t)np__get_be(c->p, n);
  c->p += n;
  c->left -= (size_t)n;
  return true;
}

/* A vector with an n-byte length prefix (RFC 8446 §3.4) as a cursor of its own. */
static bool vec(cursor *c, int n, cursor *out) {
  size_t len;
  if (!get(c, n, &len) || len > c->left)
    return false;
  out->p = c->p;
  out->left = len;
  c->p += len;
  c->left -= len;
  return true;
}

static bool is_letter_digit_hyphen(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* Check a HostName and keep it lowercased, without its trailing dot. */
static int take_name(np__sni_reader *r, const cursor *host) {
  size_t n = host->left, label = 0;

  if (n > 0 && host->p[n - 1] == '.')
    n--;
  if (n == 0 || n > NP_SNI_NAME_MAX)
    return NP_EPROTO;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = host->p[i];
    if (c == '.') {
      if (label == 0)
        return NP_EPROTO; /* an empty label */
      label = 0;
    } else if (!is_letter_digit_hyphen(c) || ++label > LABEL_MAX) {
      return NP_EPROTO;
    }
    r->name[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  if (label == 0)
    return NP_EPROTO; /* "a.." */
  r->name[n] = '\0';
  return NP_SNI_FOUND;
}

/* ServerNameList (RFC 6066 §3), all of it well-formed. The first host_name is taken, as OpenSSL
 * does; later entries are only checked for their lengths (every NameType so far has a u16 length),
 * though the RFC allows one name per type. */
static int server_name(np__sni_reader *r, cursor *ext) {
  cursor list, host;
  int res = NP_SNI_NONE;

  if (!vec(ext, 2, &list) || ext->left != 0 || list.left == 0)
    return NP_EPROTO;
  while (list.left > 0) {
    size_t type;
    if (!get(&list, 1, &type) || !vec(&list, 2, &host))
      return NP_EPROTO;
    if (type == NAME_HOST && res == NP_SNI_NONE && (res = take_name(r, &host)) < 0)
      return res;
  }
  return res;
}

/* The whole ClientHello body (RFC 8446 §4.1.2; RFC 5246 §7.4.1.2 for one without extensions). */
static int parse_hello(np__sni_reader *r) {
  cursor m = {r->msg, r->msg_len}, skip, exts;
  size_t version;
  int res = NP_SNI_NONE;
  bool seen = false;

  if (!get(&m, 2, &version) || version >> 8 != 3 || m.left < RANDOM_LEN)
    return NP_EPROTO;
  m.p += RANDOM_LEN;
  m.left -= RANDOM_LEN;
  if (!vec(&m, 1, &skip) || skip.left > SESSION_ID_MAX)
    return NP_EPROTO;
  if (!vec(&m, 2, &skip) || skip.left == 0 || skip.left % 2 != 0) /* cipher_suites */
    return NP_EPROTO;
  if (!vec(&m, 1, &skip) || skip.left == 0) /* legacy_compression_methods */
    return NP_EPROTO;
  if (m.left == 0)
    return NP_SNI_NONE; /* no extensions: allowed up to TLS 1.2 */
  if (!vec(&m, 2, &exts) || m.left != 0)
    return NP_EPROTO;
  while (exts.left > 0) {
    size_t type;
    cursor ext;
    if (!get(&exts, 2, &type) || !vec(&exts, 2, &ext))
      return NP_EPROTO;
    if (type != EXT_SERVER_NAME)
      continue;
    if (seen)
      return NP_EPROTO; /* one extension of a type per block (RFC 8446 §4.2) */
    seen = true;
    if ((res = server_name(r, &ext)) < 0)
      return res;
  }
  return res;
}

static int finish(np__sni_reader *r, int result) {
  free(r->msg);
  r->msg = NULL;
  return r->result = result;
}

void np__sni_init(np__sni_reader *r) {
  memset(r, 0, sizeof(*r));
}

void np__sni_free(np__sni_reader *r) {
  free(r->msg);
  r->msg = NULL;
}

const char *np__sni_name(const np__sni_reader *r) {
  return r->result == NP_SNI_FOUND ? r->name : NULL;
}

int np__sni_feed(np__sni_reader *r, const char *data, size_t len) {
  const unsigned char *in = (const unsigned char *)data;

  while (len > 0 && r->result == NP_SNI_MORE) {
    size_t take;

    if (r->rec_left == 0) { /* a record header */
      if (r->rec_have == 0 && ++r->records > NP_SNI_MAX_RECORDS)
        return finish(r, NP_ETOOBIG);
      r->rec[r->rec_have++] = *in++;
      len--;
      /* The first two bytes tell TLS from anything else; in a later record they are an error. */
      if ((r->rec_have == 1 && r->rec[0] != REC_HANDSHAKE) || (r->rec_have == 2 && r->rec[1] != 3))
        return finish(r, r->records == 1 ? NP_ENOTLS : NP_EPROTO);
      if (r->rec_have < NP_SNI_REC_HDR)
        continue;
      r->rec_have = 0;
      r->rec_left = (size_t)np__get_be(r->rec + 3, 2);
      if (r->rec_left == 0 || r->rec_left > REC_MAX)
        return finish(r, NP_EPROTO); /* empty handshake fragments are forbidden too (§5.1) */
      continue;
    }
    if (r->hs_have < NP_SNI_HS_HDR) { /* the handshake message's header */
      r->hs[r->hs_have++] = *in++;
      len--;
      r->rec_left--;
      if (r->hs_have == 1 && r->hs[0] != HS_CLIENT_HELLO)
        return finish(r, NP_EPROTO);
      if (r->hs_have < NP_SNI_HS_HDR)
        continue;
      r->msg_len = (size_t)np__get_be(r->hs + 1, 3);
      if (r->msg_len > NP_SNI_MAX)
        return finish(r, NP_ETOOBIG);
      if (r->msg_len < HELLO_MIN)
        return finish(r, NP_EPROTO);
      if ((r->msg = malloc(r->msg_len)) == NULL)
        return finish(r, UV_ENOMEM);
      continue;
    }
    take = r->msg_len - r->msg_have;
    if (take > r->rec_left)
      take = r->rec_left;
    if (take > len)
      take = len;
    memcpy(r->msg + r->msg_have, in, take);
    r->msg_have += take;
    r->rec_left -= take;
    in += take;
    len -= take;
    if (r->msg_have == r->msg_len)
      return finish(r, parse_hello(r));
  }
  return r->result;
}
