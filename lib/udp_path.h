/* The server's end of the datagram carrier (docs/protocol.md, "Datagram path"): one UDP socket on
 * the control port's number, which the UDP proxy type opens when the server starts. */
#ifndef NP_UDP_PATH_H
#define NP_UDP_PATH_H

#include "server.h"
#include "udp_seal.h"

/* Where the socket hands what it got (the UDP proxy type, which knows the flows). */
typedef struct np__upath_handlers {
  /* The client has flow id's socket and takes its datagrams over the path now. */
  void (*ready)(session *s, uint64_t id);
  /* A datagram for flow id of s's proxies: to its visitor. */
  void (*from_path)(session *s, uint64_t id, const char *data, size_t len);
} np__upath_handlers;

/* Bind it on addr (the control port's address and number). 0, or the bind error. to is borrowed
 * for the socket's life. In a group (srv->group_udp set), each worker opens one, in index order,
 * sharing the port (np__upath_socket); worker 0's steers. */
int np__upath_open(struct np_server *srv, const struct sockaddr *addr,
                   const np__upath_handlers *to);
/* A UDP socket in addr's SO_REUSEPORT group, in *fd. steer: also attach the program that hands
 * each packet to the group's socket whose index (the order of binding) is the low byte of the
 * packet's session id, i.e. its worker (docs/workers-plan.md, "Datagram path"). *steered: 1 when
 * the kernel took the program, 0 when not asked to, or why the kernel refused it (an old kernel,
 * not permitted: it then spreads packets by a hash of their addresses). Returns 0 or a libuv
 * error (nothing is left open). */
int np__upath_socket(const struct sockaddr *addr, int steer, int *steered, int *fd);
/* A packet another worker of srv's group received for one of srv's sessions (group_udp there):
 * handled as if srv's own socket had received it, replies going out of srv's socket. pkt is
 * borrowed and opened in place; from is borrowed. */
void np__upath_deliver(struct np_server *srv, char *pkt, size_t len, const struct sockaddr *from);
void np__upath_close(struct np_server *srv);
/* Send a flow's datagram to s's client over the datagram path: 0, or UV_EAGAIN when the path is
 * not up (the caller uses the stream), UV_EMSGSIZE when it does not fit one packet. */
int np__upath_send(session *s, uint64_t flow, const char *data, size_t len);
/* s is going: the socket forgets it. */
void np__upath_forget_session(session *s);

#endif
