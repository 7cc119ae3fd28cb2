/* Message codecs: control messages <-> bytes. A codec does no I/O; the session layer feeds it
 * whatever chunks the socket delivered and writes whatever it encodes. Two are built in: "native"
 * (our framed, versioned binary protocol, docs/protocol.md) and "line" (the seed article's text
 * protocol). An embedder can supply its own np_codec_ops. */
#ifndef NATPROXY_CODEC_H
#define NATPROXY_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <natproxy/common.h>

NP_BEGIN_DECLS

/* Message types of the native protocol; values are wire values (docs/protocol.md). */
typedef enum np_msg_type {
  NP_MSG_HELLO = 1,      /* both ways: version, nonce, status (s->c: NP_HELLO_* features) */
  NP_MSG_LOGIN = 2,      /* c->s: version, name (client), nonce (client), mac, id (instance), status
                           (NP_LOGIN_*) */
  NP_MSG_LOGIN_RESP = 3, /* s->c: status, id (session), text              */
  NP_MSG_PROXY = 4,      /* c->s: name (proxy), addr (bind), port, text (allow_ips), kind */
  NP_MSG_PROXY_RESP = 5, /* s->c: name, status, port (actual), text       */
  NP_MSG_REQ_WORK = 6,   /* s->c: id (visitor), name (proxy), addr (the visitor's "ip:port"), text
                            (the public "ip:port" it came to); addr and text may be empty */
  NP_MSG_WORK = 7,       /* c->s, first on a work connection: id (session), id2 (visitor), mac */
  NP_MSG_WORK_FAIL = 8,  /* c->s: id (visitor), status, text              */
  NP_MSG_PING = 9,       /* both ways: id (sequence), status (c->s: NP_UDP_PATH_*) */
  NP_MSG_PONG = 10,      /* both ways: id (sequence echoed)               */
  NP_MSG_CLOSE = 11,     /* both ways: status, text                       */
  NP_MSG_WORK_IDLE =
      12, /* c->s, first on a pre-opened work connection: id (session), id2 (serial), mac */
  NP_MSG_START = 13,     /* s->c on a pre-opened work connection: id (visitor), name (proxy), addr,
                            text (as REQ_WORK) */
  NP_MSG_MUX = 14,       /* c->s, first on a connection: version; the rest of it speaks yamux */
  NP_MSG_PROXY_OPT = 15, /* c->s, before the PROXY it is for: name (proxy), addr (key), text
                           (value): an option of an HTTP proxy (docs/protocol.md) */
  /* c->s: name (proxy), text (why, for the server's log): close one proxy of the session; sent
   * only to a server whose HELLO has NP_HELLO_PROXY_CLOSE */
  NP_MSG_PROXY_CLOSE = 16,
  /* c->s, from another server of a cluster, after HELLO on a multiplexed connection's first
   * stream: version, name (its cluster_advertise), nonce (its own), mac (with cluster_token);
   * answered by LOGIN_RESP */
  NP_MSG_PEER = 17,
  /* First on a stream of a peer's connection (c->s): kind, port, text (host), name (the visitor's
   * "ip:port"), addr (the "ip:port" it came to): a visitor of that route, whose bytes follow once
   * the server answers with FORWARD (s->c: status, text) */
  NP_MSG_FORWARD = 18,
  /* First on a connection of a visitor client (c->s): id (its session), id2 (a serial), kind, name
   * (the private proxy, "OWNER.PROXY"), nonce and mac (the proofs of the session and of the
   * secret, docs/protocol.md);
   * answered by VISIT (s->c: status, text), after which the connection carries the visitor's bytes
   * (stcp) or framed datagrams (sudp) */
  NP_MSG_VISIT = 19,
  /* The direct path (docs/protocol.md, "Direct paths"), on a session's control stream. c->s from a
   * visitor client: id (the path's, its own random pick), id2 (a serial), kind, name
   * ("OWNER.PROXY"), mac (the proof of the secret, as VISIT's), text (its candidates, "ip:port"
   * ","-separated). s->c, the answer: id, status, nonce (the path key), text (the owner's
   * candidates, or why not) */
  NP_MSG_DIRECT = 20,
  /* s->c to a private proxy's owner: id (the path's), id2 (the visitor's session), name (the
   * proxy), addr (the visitor client's name), nonce (the path key), mac (the server's token),
   * text (the visitor's candidates). c->s, the owner's answer: the same id, id2, addr, nonce and
   * mac, status, text (its candidates, or why not) */
  NP_MSG_DIRECT_INTRO = 21
} np_msg_type;

#define NP_MSG_LAST NP_MSG_DIRECT_INTRO

/* HELLO's status from the server: what it takes beyond version 1's messages (0: nothing; a server
 * older than this field sends none, which reads as 0). docs/protocol.md, "Versions". */
#define NP_HELLO_PROXY_CLOSE 1 /* PROXY_CLOSE: a client may close one proxy of its session */
#define NP_HELLO_PRIVATE     2 /* private proxies (kinds 4 and 5) and VISIT */
#define NP_HELLO_DIRECT      4 /* DIRECT and DIRECT_INTRO: direct paths between two clients */

/* LOGIN's status: what the client asks for (0: nothing). */
#define NP_LOGIN_TAKEOVER 1 /* replace a live session under the same name (--takeover) */
#define NP_LOGIN_DIRECT   2 /* the client takes DIRECT_INTRO: it can be a direct path's owner */

/* What a proxy carries (PROXY's kind). */
typedef enum np_proxy_kind {
  NP_PROXY_TCP = 0,
  NP_PROXY_UDP = 1,
  NP_PROXY_HTTP = 2,
  NP_PROXY_HTTPS = 3,
  NP_PROXY_STCP = 4, /* private: no public port, visitors prove a secret (VISIT) */
  NP_PROXY_SUDP = 5  /* the same for a UDP service */
} np_proxy_kind;
#define NP_PROXY_KIND_LAST NP_PROXY_SUDP

/* PING's status from a client: news about its datagram path (0: none). */
#define NP_UDP_PATH_UP   1 /* it answers: send UDP flows' datagrams over it */
#define NP_UDP_PATH_DOWN 2 /* it stopped answering here: send them inside the tunnel */
/* PING's status from a server: it drains (np_server_drain): no new visitors will come; the ones
 * joined finish, then the session ends and the client reconnects at once. Older clients ignore a
 * server's PING status, so this needs no new message. */
#define NP_PING_DRAINING 3

#define NP_MSG_NAME_MAX 64  /* bytes, without the terminating NUL */
#define NP_MSG_TEXT_MAX 255 /* bytes, without the terminating NUL */
#define NP_MSG_KEY_LEN  32  /* nonce and MAC length */

/* A decoded or to-be-encoded message. A value type: fields a type does not use are ignored by
 * encoders and zeroed by decoders. Strings are NUL-terminated and never contain NUL. It grows only
 * at the end, and only with a new member of np_codec_ops (see there): a program that calls a
 * built-in codec itself passes an np_msg of the library's size, so it is rebuilt when np_msg grows
 * (the ABI check reports that change; docs/api.md). */
typedef struct np_msg {
  np_msg_type type;
  uint16_t version;
  uint16_t port;
  int32_t status;
  uint8_t kind; /* enum np_proxy_kind */
  uint64_t id;
  uint64_t id2;
  unsigned char nonce[NP_MSG_KEY_LEN];
  unsigned char mac[NP_MSG_KEY_LEN];
  char name[NP_MSG_NAME_MAX + 1];
  char addr[NP_MSG_NAME_MAX + 1];
  char text[NP_MSG_TEXT_MAX + 1];
} np_msg;

/* What a codec's wire format can express; the session layer adapts to it. */
enum np_codec_caps {
  NP_CODEC_CAP_AUTH = 1 << 0,        /* HELLO/LOGIN handshake and PROXY registration */
  NP_CODEC_CAP_WORK_HEADER = 1 << 1, /* work connections start with WORK{id}: matched by id */
  NP_CODEC_CAP_PONG = 1 << 2         /* the peer answers PING, so silence means it is dead */
};

/* A codec's functions. Members are only ever added at the end, and size says which of them (and so
 * which np_msg) the codec was built for: set .size = sizeof(np_codec_ops). The library refuses
 * (UV_EINVAL) a size it does not know: 0 (not set), or larger (a newer header's). np_msg grows only
 * together with this struct, at its end, so a codec's size also says which np_msg it knows: the
 * library will zero the fields such a codec lacks and read only those it knows. */
typedef struct np_codec_ops {
  size_t size; /* sizeof(np_codec_ops), as the codec was compiled */
  const char *name;
  unsigned caps; /* enum np_codec_caps */
  /* Decoder state; max_frame caps one encoded message in bytes. */
  int (*decoder_new)(size_t max_frame, void **out);
  void (*decoder_free)(void *dec);
  /* Consume bytes from buf[0..len). Returns 1 and fills *msg when a message is complete, 0 when
   * every byte was consumed without completing one, or a negative code (NP_EPROTO, NP_ETOOBIG,
   * NP_EVERSION; NP_ETLSREQUIRED when the bytes are a TLS handshake) that sticks: every later call
   * returns it. *consumed is always set. Buffers at most one partial frame. */
  int (*decode)(void *dec, const char *buf, size_t len, size_t *consumed, np_msg *msg);
  /* Encode msg into buf[0..cap). Returns the length, NP_EUNSUPPORTED for a type the format cannot
   * express, NP_ETOOBIG when cap is too small, NP_EPROTO for an invalid field. */
  int (*encode)(const np_msg *msg, char *buf, size_t cap);
} np_codec_ops;

/* Upper bound of any encoding by the built-in codecs. */
#define NP_CODEC_MAX_ENCODED 1024

NP_EXPORT const np_codec_ops *np_codec_native(void);
NP_EXPORT const np_codec_ops *np_codec_line(void);
/* "native" or "line" -> ops; NULL when unknown. */
NP_EXPORT const np_codec_ops *np_codec_find(const char *name);
NP_EXPORT const char *np_msg_type_name(np_msg_type type);

NP_END_DECLS

#endif
