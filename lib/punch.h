/* UDP hole punching for the direct path (docs/direct-plan.md, steps 1 and 3): one UDP socket that
 * first learns its public mapping from the server's STUN answerer, then sends small probes sealed
 * with the path key to every candidate address of the other client (and to predicted ports near
 * its public one) until an authentic probe arrives. The address it came from is the path; from then
 * on the socket carries the path's other datagrams (QUIC) to and from that address only. Bounded:
 * at most NP_PUNCH_TARGETS addresses, one probe to each per NP_PUNCH_INTERVAL_MS, until the
 * deadline. Not installed. */
#ifndef NP_PUNCH_H
#define NP_PUNCH_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define NP_PUNCH_TARGETS     16 /* addresses probed at most: candidates and predicted ports */
#define NP_PUNCH_PREDICT     8  /* ports above the peer's public one, for NATs that count up */
#define NP_PUNCH_VERIFIED    4  /* addresses of the other side an authentic probe came from */
#define NP_PUNCH_INTERVAL_MS 50 /* between two rounds of probes */
#define NP_PUNCH_CANDS_MAX   8  /* candidates a side announces or takes */
#define NP_PUNCH_STUN_TRIES  5  /* STUN requests, NP_PUNCH_STUN_MS apart, before going without */
#define NP_PUNCH_STUN_MS     200

enum { NP_PUNCH_OWNER = 0, NP_PUNCH_VISITOR = 1 };

typedef struct np__punch np__punch;

typedef struct np__punch_ops {
  /* The candidates are known (np__punch_candidates): with the public mapping (status 0) or, the
   * server's STUN silent, with local addresses only (NP_ETIMEOUT). */
  void (*mapped)(void *ud, int status);
  /* The first authentic probe from the other side came from peer: that is the path. */
  void (*found)(void *ud, const struct sockaddr *peer);
  /* A datagram that is not a probe (QUIC), from an address an authentic probe came from: the
   * path's peer, or (the owner's side, whose first QUIC packet may come from another address of
   * the visitor than the probe it took) another such address, which np__punch_set_peer can make
   * the path's. One datagram that came before any probe of its address is held and given here
   * once the probe comes. */
  void (*packet)(void *ud, const uint8_t *data, size_t len, const struct sockaddr *from);
  /* No authentic probe before the deadline. */
  void (*failed)(void *ud, int status);
} np__punch_ops;

typedef struct np__punch_stats {
  uint64_t probes_sent, probes_bad, targets;
  uint64_t mapped_ms, found_ms; /* since np__punch_new, since np__punch_go */
  char found_as[64];            /* which of the targets won: "candidate N" or "predicted +N" */
} np__punch_stats;

/* A socket on any address and a free port; a STUN request to stun_server at once. 0 or an error. */
int np__punch_new(uv_loop_t *loop, const struct sockaddr *stun_server, const np__punch_ops *ops,
                  void *ud, np__punch **out);
/* This side's candidates as "ip:port,ip:port,...": the public mapping first, then local addresses
 * with the socket's port. 0, or UV_ENOBUFS. */
int np__punch_candidates(np__punch *p, char *buf, size_t len);
/* Start probing the other side's candidates (peer_cands, as np__punch_candidates writes them) as
 * role, for path id with key, for at most deadline_ms. 0, or NP_EPROTO for candidates that do not
 * parse (none at all, or a malformed one). */
int np__punch_go(np__punch *p, uint64_t id, int role, const uint8_t key[32], const char *peer_cands,
                 uint64_t deadline_ms);
/* Parse candidates (as np__punch_candidates writes them) into out (at most max), keeping those a
 * probe may go to from a socket that reaches server: its address family; no unspecified,
 * multicast or broadcast address; loopback only when server is on loopback too (so a peer cannot
 * make us probe our own host's services). The count kept (at least 1), NP_EPROTO for a list that
 * does not parse, or UV_EAFNOSUPPORT when none is of server's family. */
int np__punch_parse(const struct sockaddr *server, const char *cands, struct sockaddr_storage *out,
                    size_t max);
/* Make from (an address an authentic probe came from) the path's peer. */
void np__punch_set_peer(np__punch *p, const struct sockaddr *from);
/* A datagram to the path's peer (after found): 0, or the error of the send (a full socket: QUIC
 * sends again). */
int np__punch_send(np__punch *p, const uint8_t *data, size_t len);
/* The socket's local address (for QUIC's path). */
int np__punch_local(np__punch *p, struct sockaddr_storage *out);
const np__punch_stats *np__punch_get_stats(const np__punch *p);
/* Close the socket and timers; the memory goes once libuv is done with them. No callback after. */
void np__punch_close(np__punch *p);

#endif
