/* The client's end of the datagram carrier (docs/protocol.md, "Datagram path"): a UDP socket
 * towards the server's control port number, probes that find out whether UDP gets through and keep
 * the NAT's mapping open, and the flows that use it. While it is down, flows use the tunnel; it is
 * tried again every retry_ms. */
#ifndef NP_UDP_LINK_H
#define NP_UDP_LINK_H

#include <stdint.h>

#include <uv.h>

#include "conn.h"
#include "internal.h"
#include "udp_seal.h"

/* uthash's non-fatal mode, as everywhere here (see http_route.c): a flow it cannot add is left out
 * with its hh.tbl NULL. */
#ifndef HASH_NONFATAL_OOM
#define HASH_NONFATAL_OOM 1
#endif
#include <uthash.h>

typedef struct np__ulink np__ulink;

typedef struct np__ulink_flow np__ulink_flow;
/* A datagram for the flow's local service that came over the path. */
typedef void (*np__ulink_deliver_cb)(np__ulink_flow *f, const char *data, size_t len);

/* A flow that may use the link: embedded in its UDP conn (conn_udp.c), which sets deliver (the link
 * calls up through it, so the link knows nothing of conns). */
struct np__ulink_flow {
  np__ulink *link; /* NULL: not attached, or the link went */
  uint64_t id;     /* the visitor id */
  np__ulink_deliver_cb deliver;
  UT_hash_handle hh; /* in its link's flows, by id */
};

typedef struct np__ulink_stats {
  uint64_t in, out;    /* datagrams over the path */
  uint64_t rejected;   /* packets that did not verify */
  uint64_t ups, downs; /* times the path came up, went down */
} np__ulink_stats;

/* Runs when the path comes up (up = 1) or goes down, so the server can be told at once. */
typedef void (*np__ulink_cb)(void *arg, int up);

int np__ulink_new(uv_loop_t *loop, const struct sockaddr *server,
                  const unsigned char master[NP_SEAL_MASTER], uint64_t session,
                  uint64_t keepalive_ms, uint64_t retry_ms, const np__logger *log,
                  np__ulink_stats *stats, np__ulink_cb cb, void *arg, np__ulink **out);
/* Detaches every flow (they use the tunnel from then on); memory goes asynchronously. */
void np__ulink_close(np__ulink *l);
int np__ulink_is_up(const np__ulink *l);

/* f is found by its id from then on; out of memory, it stays detached and uses the tunnel. */
void np__ulink_attach(np__ulink *l, np__ulink_flow *f);
void np__ulink_detach(np__ulink_flow *f);
/* Send a datagram of flow f over the path: 0, or UV_EAGAIN (down) / UV_EMSGSIZE (too large): the
 * caller uses the tunnel. */
int np__ulink_send(np__ulink_flow *f, const char *data, size_t len);

/* conn_udp.c: the flow of a UDP conn, NULL for any other conn. */
np__ulink_flow *np__conn_udp_flow(np_conn *c);

#endif
