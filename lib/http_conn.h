/* A visitor's connection to the HTTP vhost (proxy_http.c routes its requests, http_relay.c moves
 * them and their responses). Not installed.
 *
 * A connection's requests go, in order, over "runs": a run is one work connection of one proxy,
 * carrying the requests of this connection that follow each other for that proxy (one visitor in
 * the pool, one access log line). A request for another proxy waits (H_DRAIN) until every response
 * of the run is complete; then the run ends and the request starts the next one. Responses are read
 * with http_parser only to know where each ends: bytes a service sends beyond the responses it
 * owes are never passed on. */
#ifndef NP_HTTP_CONN_H
#define NP_HTTP_CONN_H

#include "http_head.h"
#include "vhost.h"

#define NP_HTTP_READ_SIZE    (16 * 1024)
#define NP_HTTP_PIPELINE_MAX 32    /* requests forwarded whose responses have not ended */
#define NP_HTTP_HEAD_TIMEOUT 30000 /* ms: for a head to arrive; idle after the last response */
#define NP_HTTP_LINGER       2000  /* ms: reading what a visitor still sends after our answer */

enum np__hstate {
  H_HEAD,    /* reading a request head */
  H_WAIT,    /* its proxy's client was asked for a work connection (a visitor in the pool) */
  H_BODY,    /* forwarding a request's body */
  H_UPGRADE, /* an Upgrade or CONNECT request went: is the answer 101 (2xx)? */
  H_DRAIN,   /* the next request goes elsewhere (or is answered here): waiting for responses */
  H_JOINED,  /* upgraded: the byte relay (join.c) has both connections */
  H_CLOSING, /* closing: the visitor's conn is shut down or closed */
};

/* What a forwarded request's response will be like. */
enum { M_PLAIN, M_HEAD, M_UPGRADE, M_CONNECT };

typedef struct np__hconn np__hconn;
struct np__hconn {
  np__vhost *vh;
  np_conn *vc, *work;
  enum np__hstate state;
  np__http_head head;
  http_parser req, resp; /* the forwarded requests' framing; the responses' */
  int req_done;
  char *stash; /* read from the visitor, not yet handled */
  size_t stash_len;
  unsigned char kinds[NP_HTTP_PIPELINE_MAX]; /* M_*, of the requests awaiting responses */
  unsigned pending, first;
  size_t to_work, to_visitor; /* bytes queued */
  unsigned reading_v : 1, reading_w : 1, visitor_eof : 1, trusted : 1;
  unsigned from_peer : 1; /* forwarded here by another server of the cluster: never forwarded on */
  unsigned body_then_upgrade : 1; /* the request whose body goes is an upgrade */
  unsigned switching : 1;         /* the service answered 101 (or 2xx to CONNECT) */
  unsigned vc_closing : 1;        /* the visitor's conn was closed or aborted */
  unsigned lingering : 1;         /* shut down after an answer: reading what still comes */
  unsigned last_request : 1;      /* a request or a response said Connection: close (or HTTP/1.0) */
  uint64_t deadline;              /* for a head (H_HEAD), or the end of lingering; 0: none */
  uint64_t last_io;               /* when bytes last moved */
  np__addr addr, to;
  char rbuf[NP_HTTP_READ_SIZE];
  /* the run: the proxy its work connection serves, and what the access log says of it */
  proxy *px;
  char host_rewrite[NP_MSG_TEXT_MAX + 1]; /* the proxy's host_header_rewrite; "": none */
  /* The router (proxy_http.c): routes the complete (or broken) head in h->head. */
  void (*dispatch)(np__hconn *h);
  unsigned run;  /* counts runs, so a write can tell whether its run is still the current one */
  unsigned hops; /* moves between workers since its last request served here (NP_VHOST_HOPS_MAX) */
  char px_name[NP_MSG_NAME_MAX + 1];
  np__meter meter;
  np__track t;
  uint64_t since, in, out;
  const char *end;
  struct np_join *join;
  int refs; /* the visitor's conn, the work conn, each write, the join */
  np__hconn *prev, *next;
};

/* http_relay.c */
/* Start reading a new visitor connection. */
void np__hconn_start(np__hconn *h);
/* Hand the connection, its request head read and routed to a proxy of worker widx, over there
 * (np__vhost_hand): the head and what followed it go along. Only with no run and nothing queued
 * for the visitor. 0: it went, h ends here; else the error, h as it was. */
int np__hconn_move(np__hconn *h, unsigned widx);
/* The same to the server of the cluster that holds host (np__vhost_to_peer): 0 when it went,
 * UV_ENOENT when none does, UV_EBUSY or another error. */
int np__hconn_to_peer(np__hconn *h, const char *host, size_t hostlen);
/* np__hconn_move for a connection that cannot move (from_peer: a stream), through
 * np__vhost_bridge: 0 when it went (h lets go of its conn), else the error. */
int np__hconn_bridge(np__hconn *h, unsigned widx);
/* The head in h->head goes to the run's work connection, rewritten; its body follows. 0 or
 * UV_ENOMEM. */
int np__hconn_forward(np__hconn *h);
/* The run's work connection came (the core's join). rest: what the client sent after its header. */
void np__hconn_join(np__hconn *h, visitor *v, session *s, np_conn *work, const char *rest,
                    size_t rest_len);
/* The server's own answer (a status line and a small page), with Connection: close. extra: more
 * header lines ("Name: value\r\n"), or NULL. */
void np__hconn_answer(np__hconn *h, int status, const char *reason, const char *extra,
                      const char *text);
/* End the connection: abort (reset) now, or close once what is queued for the visitor is out. */
void np__hconn_finish(np__hconn *h, int abort);
/* Move on where the state allows, then read what may be read: after every event. */
void np__hconn_pump(np__hconn *h);
/* Deadlines, about once a second. */
void np__hconn_tick(np__hconn *h, uint64_t now);
/* The server drains: the connection ends once the responses it waits for are out (at once when
 * it waits for none: a keep-alive connection idle between requests); an upgraded one goes on. */
void np__hconn_drain(np__hconn *h);
/* The server stops: cut it now, whatever its state. */
void np__hconn_stop(np__hconn *h);
void np__hconn_unref(np__hconn *h);

#endif
