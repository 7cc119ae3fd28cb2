/* UDP hole punching (punch.h). Both clients send at once: each one's first probe opens its own
 * NAT's mapping towards the other's public address, so the other's probes get in from then on,
 * whatever filtering the NAT does. The probe says nothing but the path id and the sender's role,
 * sealed with the path key, so only the client the server introduced can fix the path: a stranger
 * spraying datagrams at the socket cannot, and a reflected probe (our own) is not taken.
 *
 * Ports are predicted for NATs that give each new destination the next free port (the public port
 * STUN saw, plus 1 to NP_PUNCH_PREDICT): a port-randomising NAT defeats this, and then the path
 * fails and the visitor is carried through the server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "punch.h"

#include "auth.h"
#include "internal.h"
#include "stun.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define PROBE_LEN   30 /* "NPP1", id (8), role, 0, MAC (16) */
#define PROBE_MAC   16
#define REPLY_EVERY 20 /* ms: at most one probe back per this, on the path */

enum { P_MAPPING, P_MAPPED, P_PUNCHING, P_FOUND, P_FAILED };

typedef struct target {
  struct sockaddr_storage addr;
  int predicted; /* 0: candidate; N: predicted, port + N */
  unsigned index;
} target;

struct np__punch {
  uv_loop_t *loop;
  uv_udp_t udp;
  uv_timer_t timer;
  const np__punch_ops *ops;
  void *ud;
  int state, closing, closes_left;
  struct sockaddr_storage server, mapped, peer;
  unsigned char tid[NP_STUN_TID_LEN];
  unsigned stun_tries;
  uint64_t id;
  int role;
  uint8_t key[32];
  target targets[NP_PUNCH_TARGETS];
  size_t n_targets;
  struct sockaddr_storage verified[NP_PUNCH_VERIFIED]; /* authentic probes came from these */
  size_t n_verified;
  struct sockaddr_storage early_from; /* a datagram from an address not verified yet */
  size_t early_len;
  char early[1500];
  uint64_t started, go_at, deadline, replied;
  np__punch_stats stats;
  char buf[65536];
};

static uint64_t now(const np__punch *p) {
  return uv_now(p->loop);
}

static socklen_t sa_len(const struct sockaddr *sa) {
  return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static void send_to(np__punch *p, const void *data, size_t len, const struct sockaddr *to) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  (void)uv_udp_try_send(&p->udp, &b, 1, to); /* a full socket loses a probe: the next round sends */
}

static void probe_make(const np__punch *p, unsigned char out[PROBE_LEN], int role) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;

  memcpy(out, "NPP1", 4);
  for (int i = 0; i < 8; i++)
    out[4 + i] = (unsigned char)(p->id >> (56 - 8 * i));
  out[12] = (unsigned char)role;
  out[13] = 0;
  HMAC(EVP_sha256(), p->key, sizeof(p->key), out, 14, md, &mdlen);
  memcpy(out + 14, md, PROBE_MAC);
}

static int is_probe(const char *data, size_t len) {
  return len == PROBE_LEN && memcmp(data, "NPP1", 4) == 0;
}

/* From the other side, for this path, sealed with its key. */
static int probe_ok(const np__punch *p, const char *data) {
  unsigned char want[PROBE_LEN];
  probe_make(p, want, !p->role);
  return CRYPTO_memcmp(want, data, PROBE_LEN) == 0;
}

static void send_probe(np__punch *p, const struct sockaddr *to) {
  unsigned char pr[PROBE_LEN];
  probe_make(p, pr, p->role);
  send_to(p, pr, sizeof(pr), to);
  p->stats.probes_sent++;
}

static void send_stun(np__punch *p) {
  unsigned char req[NP_STUN_BUILD_MAX];
  int n = np__stun_request(p->tid, req, sizeof(req));
  if (n > 0)
    send_to(p, req, (size_t)n, (struct sockaddr *)&p->server);
}

static void on_stun(np__punch *p, const char *data, size_t len, const struct sockaddr *from) {
  np__stun m;

  if (p->state != P_MAPPING || !np__addr_equal(from, (struct sockaddr *)&p->server) ||
      np__stun_parse(data, len, &m) != 0 || m.type != NP_STUN_BINDING_SUCCESS ||
      memcmp(m.tid, p->tid, sizeof(p->tid)) != 0 || m.mapped.ss_family == 0)
    return;
  p->mapped = m.mapped;
  p->state = P_MAPPED;
  p->stats.mapped_ms = now(p) - p->started;
  uv_timer_stop(&p->timer);
  p->ops->mapped(p->ud, 0);
}

static int verified(const np__punch *p, const struct sockaddr *from) {
  for (size_t i = 0; i < p->n_verified; i++)
    if (np__addr_equal((const struct sockaddr *)&p->verified[i], from))
      return 1;
  return 0;
}

/* from sent an authentic probe: its datagrams are the path's from now on; the one it sent before,
 * held, goes up now. */
static void verify(np__punch *p, const struct sockaddr *from) {
  if (verified(p, from) || p->n_verified == NP_PUNCH_VERIFIED)
    return;
  memset(&p->verified[p->n_verified], 0, sizeof(p->verified[0]));
  memcpy(&p->verified[p->n_verified++], from, sa_len(from));
}

static void early_deliver(np__punch *p, const struct sockaddr *from) {
  struct sockaddr_storage at;
  size_t len;

  if (p->early_len == 0 || p->closing || !np__addr_equal((struct sockaddr *)&p->early_from, from))
    return;
  at = p->early_from;
  len = p->early_len;
  p->early_len = 0;
  p->ops->packet(p->ud, (const uint8_t *)p->early, len, (struct sockaddr *)&at);
}

static void on_probe(np__punch *p, const char *data, const struct sockaddr *from) {
  if (p->state != P_PUNCHING && p->state != P_FOUND)
    return;
  if (!probe_ok(p, data)) {
    p->stats.probes_bad++;
    return;
  }
  verify(p, from);
  if (p->state == P_PUNCHING) {
    memset(&p->peer, 0, sizeof(p->peer));
    memcpy(&p->peer, from, sa_len(from));
    p->state = P_FOUND;
    p->stats.found_ms = now(p) - p->go_at;
    snprintf(p->stats.found_as, sizeof(p->stats.found_as), "an address none of its candidates");
    for (size_t i = 0; i < p->n_targets; i++)
      if (np__addr_equal((struct sockaddr *)&p->targets[i].addr, from)) {
        if (p->targets[i].predicted)
          snprintf(p->stats.found_as, sizeof(p->stats.found_as), "predicted port +%d",
                   p->targets[i].predicted);
        else
          snprintf(p->stats.found_as, sizeof(p->stats.found_as), "candidate %u",
                   p->targets[i].index + 1);
        break;
      }
    uv_timer_stop(&p->timer);
    send_probe(p, from); /* the other side may not have found us yet: now it can */
    p->replied = now(p);
    p->ops->found(p->ud, from);
    early_deliver(p, from);
    return;
  }
  early_deliver(p, from);
  /* Found already: the other side still probes because none of ours reached it. Answer it on the
   * path, a few times a second at most. */
  if (np__addr_equal(from, (struct sockaddr *)&p->peer) && now(p) - p->replied >= REPLY_EVERY) {
    send_probe(p, from);
    p->replied = now(p);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  np__punch *p = h->data;
  (void)suggested;
  *buf = uv_buf_init(p->buf, sizeof(p->buf));
}

static void on_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                    unsigned flags) {
  np__punch *p = h->data;

  (void)flags;
  if (n <= 0 || from == NULL || p->closing)
    return;
  if (np__stun_is(buf->base, (size_t)n))
    on_stun(p, buf->base, (size_t)n, from);
  else if (is_probe(buf->base, (size_t)n))
    on_probe(p, buf->base, from);
  else if (p->state == P_FOUND && verified(p, from))
    p->ops->packet(p->ud, (const uint8_t *)buf->base, (size_t)n, from);
  else if ((p->state == P_PUNCHING || p->state == P_FOUND) && (size_t)n <= sizeof(p->early)) {
    /* Before the probe of its address: QUIC's first packet may overtake it. Held, one. */
    memset(&p->early_from, 0, sizeof(p->early_from));
    memcpy(&p->early_from, from, sa_len(from));
    memcpy(p->early, buf->base, (size_t)n);
    p->early_len = (size_t)n;
  }
}

static void on_timer(uv_timer_t *t) {
  np__punch *p = t->data;

  if (p->state == P_MAPPING) {
    if (++p->stun_tries < NP_PUNCH_STUN_TRIES) {
      send_stun(p);
      return;
    }
    p->state = P_MAPPED;
    uv_timer_stop(&p->timer);
    p->ops->mapped(p->ud, UV_ETIMEDOUT);
    return;
  }
  if (p->state != P_PUNCHING)
    return;
  if (now(p) >= p->deadline) {
    p->state = P_FAILED;
    uv_timer_stop(&p->timer);
    p->ops->failed(p->ud, UV_ETIMEDOUT);
    return;
  }
  for (size_t i = 0; i < p->n_targets; i++)
    send_probe(p, (struct sockaddr *)&p->targets[i].addr);
}

int np__punch_new(uv_loop_t *loop, const struct sockaddr *stun_server, const np__punch_ops *ops,
                  void *ud, np__punch **out) {
  np__punch *p = calloc(1, sizeof(*p));
  struct sockaddr_storage any;
  int r;

  if (p == NULL)
    return UV_ENOMEM;
  p->loop = loop;
  p->ops = ops;
  p->ud = ud;
  memcpy(&p->server, stun_server, sa_len(stun_server));
  memset(&any, 0, sizeof(any));
  if (stun_server->sa_family == AF_INET6) {
    uv_ip6_addr("::", 0, (struct sockaddr_in6 *)&any);
  } else {
    uv_ip4_addr("0.0.0.0", 0, (struct sockaddr_in *)&any);
  }
  if ((r = uv_udp_init(loop, &p->udp)) != 0) {
    free(p);
    return r;
  }
  p->udp.data = p;
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  if ((r = uv_udp_bind(&p->udp, (struct sockaddr *)&any, 0)) != 0 ||
      (r = uv_udp_recv_start(&p->udp, on_alloc, on_recv)) != 0 ||
      (r = np__auth_random(p->tid, sizeof(p->tid))) != 0) {
    np__punch_close(p);
    return r;
  }
  p->started = now(p);
  p->state = P_MAPPING;
  send_stun(p);
  uv_timer_start(&p->timer, on_timer, NP_PUNCH_STUN_MS, NP_PUNCH_STUN_MS);
  *out = p;
  return 0;
}

int np__punch_local(np__punch *p, struct sockaddr_storage *out) {
  int len = sizeof(*out);
  return uv_udp_getsockname(&p->udp, (struct sockaddr *)out, &len);
}

static int port_of(const struct sockaddr *sa) {
  return sa->sa_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
                                   : ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

static void set_port(struct sockaddr *sa, int port) {
  if (sa->sa_family == AF_INET6)
    ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
}

static int append(char *buf, size_t len, size_t *off, const struct sockaddr *sa) {
  char s[64];
  int n;

  np__addr_str(sa, s, sizeof(s));
  n = snprintf(buf + *off, len - *off, "%s%s", *off > 0 ? "," : "", s);
  if (n < 0 || (size_t)n >= len - *off)
    return UV_ENOBUFS;
  *off += (size_t)n;
  return 0;
}

int np__punch_candidates(np__punch *p, char *buf, size_t len) {
  struct sockaddr_storage local;
  uv_interface_address_t *ifs = NULL;
  size_t off = 0;
  int n = 0, count = 0, r;

  if (len == 0)
    return UV_ENOBUFS;
  buf[0] = '\0';
  if (p->mapped.ss_family != 0) {
    if ((r = append(buf, len, &off, (struct sockaddr *)&p->mapped)) != 0)
      return r;
    count++;
  }
  if (np__punch_local(p, &local) != 0 || uv_interface_addresses(&ifs, &n) != 0)
    return 0;
  /* Local addresses find a peer on the same network, where the NAT may not loop back. */
  for (int i = 0; i < n && count < NP_PUNCH_CANDS_MAX; i++) {
    struct sockaddr_storage a;
    if (ifs[i].is_internal || ifs[i].address.address4.sin_family != p->server.ss_family)
      continue;
    memset(&a, 0, sizeof(a));
    memcpy(&a, &ifs[i].address, sa_len((struct sockaddr *)&ifs[i].address));
    set_port((struct sockaddr *)&a, port_of((struct sockaddr *)&local));
    if (p->mapped.ss_family != 0 &&
        np__addr_equal((struct sockaddr *)&a, (struct sockaddr *)&p->mapped))
      continue;
    if (append(buf, len, &off, (struct sockaddr *)&a) != 0)
      break; /* what fits is sent */
    count++;
  }
  uv_free_interface_addresses(ifs, n);
  return 0;
}

static void add_target(np__punch *p, const struct sockaddr_storage *a, int predicted,
                       unsigned index) {
  if (p->n_targets == NP_PUNCH_TARGETS)
    return;
  for (size_t i = 0; i < p->n_targets; i++)
    if (np__addr_equal((struct sockaddr *)&p->targets[i].addr, (const struct sockaddr *)a))
      return;
  p->targets[p->n_targets++] = (target){.addr = *a, .predicted = predicted, .index = index};
}

static int usable(const struct sockaddr *server, const struct sockaddr *a) {
  if (a->sa_family != server->sa_family || port_of(a) == 0)
    return 0;
  if (a->sa_family == AF_INET) {
    uint32_t ip = ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr);
    uint32_t sip = ntohl(((const struct sockaddr_in *)server)->sin_addr.s_addr);
    if (ip == 0 || ip >= 0xe0000000u) /* unspecified, multicast, reserved, broadcast */
      return 0;
    return (ip >> 24) != 127 || (sip >> 24) == 127;
  }
  {
    const struct in6_addr *ip = &((const struct sockaddr_in6 *)a)->sin6_addr;
    const struct in6_addr *sip = &((const struct sockaddr_in6 *)server)->sin6_addr;
    if (IN6_IS_ADDR_UNSPECIFIED(ip) || IN6_IS_ADDR_MULTICAST(ip) || IN6_IS_ADDR_V4MAPPED(ip))
      return 0;
    return !IN6_IS_ADDR_LOOPBACK(ip) || IN6_IS_ADDR_LOOPBACK(sip);
  }
}

int np__punch_parse(const struct sockaddr *server, const char *cands, struct sockaddr_storage *out,
                    size_t max) {
  char list[NP_MSG_TEXT_MAX + 1];
  size_t n = 0, seen = 0;

  if (np__strlcpy(list, cands, sizeof(list)) != 0)
    return NP_EPROTO;
  for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok != NULL;
       tok = strtok_r(NULL, ",", &save)) {
    struct sockaddr_storage a;
    if (++seen > NP_PUNCH_CANDS_MAX || np__parse_addr(tok, &a) != 0)
      return NP_EPROTO;
    if (usable(server, (struct sockaddr *)&a) && n < max)
      out[n++] = a;
  }
  if (seen == 0)
    return NP_EPROTO;
  return n == 0 ? UV_EAFNOSUPPORT : (int)n;
}

int np__punch_go(np__punch *p, uint64_t id, int role, const uint8_t key[32], const char *peer_cands,
                 uint64_t deadline_ms) {
  struct sockaddr_storage cands[NP_PUNCH_CANDS_MAX];
  int r;
  size_t n;

  if (p->state != P_MAPPED)
    return NP_ESTATE;
  if ((r = np__punch_parse((struct sockaddr *)&p->server, peer_cands, cands, NP_PUNCH_CANDS_MAX)) <
      0)
    return r;
  n = (size_t)r;
  p->id = id;
  p->role = role;
  memcpy(p->key, key, sizeof(p->key));
  for (size_t i = 0; i < n; i++)
    add_target(p, &cands[i], 0, (unsigned)i);
  /* The first candidate is the public mapping STUN saw: a NAT that counts up gives the next
   * destination (us) one of the next ports. */
  for (int k = 1; k <= NP_PUNCH_PREDICT && port_of((struct sockaddr *)&cands[0]) + k <= 65535;
       k++) {
    struct sockaddr_storage a = cands[0];
    set_port((struct sockaddr *)&a, port_of((struct sockaddr *)&cands[0]) + k);
    add_target(p, &a, k, 0);
  }
  p->stats.targets = p->n_targets;
  p->state = P_PUNCHING;
  p->go_at = now(p);
  p->deadline = p->go_at + deadline_ms;
  on_timer(&p->timer); /* the first round now */
  uv_timer_start(&p->timer, on_timer, NP_PUNCH_INTERVAL_MS, NP_PUNCH_INTERVAL_MS);
  return 0;
}

void np__punch_set_peer(np__punch *p, const struct sockaddr *from) {
  if (p->state == P_FOUND && verified(p, from)) {
    memset(&p->peer, 0, sizeof(p->peer));
    memcpy(&p->peer, from, sa_len(from));
  }
}

int np__punch_send(np__punch *p, const uint8_t *data, size_t len) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  int r;

  if (p->state != P_FOUND)
    return NP_ESTATE;
  r = uv_udp_try_send(&p->udp, &b, 1, (struct sockaddr *)&p->peer);
  return r < 0 ? r : 0;
}

const np__punch_stats *np__punch_get_stats(const np__punch *p) {
  return &p->stats;
}

static void on_closed(uv_handle_t *h) {
  np__punch *p = h->data;
  if (--p->closes_left == 0) {
    OPENSSL_cleanse(p->key, sizeof(p->key));
    free(p);
  }
}

void np__punch_close(np__punch *p) {
  if (p == NULL || p->closing)
    return;
  p->closing = 1;
  p->closes_left = 2;
  uv_close((uv_handle_t *)&p->udp, on_closed);
  uv_close((uv_handle_t *)&p->timer, on_closed);
}
