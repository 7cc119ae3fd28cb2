/* A connection's arrival on another loop (thread): np__conn_move_in makes a conn, plain or TLS, of
 * what a move_out took out of one (np__moved, conn.h), and np__moved_free releases what never
 * arrived. Apart from conn.c and tls.c because it needs both, and neither may call the other. */
#include "conn_move.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

void np__moved_init(np__moved *m) {
  memset(m, 0, sizeof(*m));
  m->fd = -1;
}

void np__moved_free(np__moved *m) {
  if (m->fd >= 0)
    close(m->fd);   /* the last descriptor of the socket: the peer sees the connection end */
  SSL_free(m->ssl); /* with its BIO, whose data is NULL while it travels */
  free(m->rest);
  free(m->pre);
  np__moved_init(m);
}

int np__conn_move_in(uv_loop_t *loop, np__tls *tls, np__moved *m, np_conn **out) {
  np_conn *c, *tc;
  int r;

  if (m->fd < 0 || (m->ssl != NULL && tls == NULL)) {
    r = UV_EINVAL;
    goto err_free;
  }
  if ((r = np__conn_tcp_new(loop, &c)) != 0)
    goto err_free;
  if ((r = uv_tcp_open(np__conn_tcp_handle(c), m->fd)) != 0) {
    np__conn_close(c, NULL);
    goto err_free;
  }
  m->fd = -1; /* c's now */
  if (m->peer.ss_family != 0)
    np__conn_tcp_set_peer(c, (const struct sockaddr *)&m->peer);
  if (m->ssl != NULL) {
    if ((r = np__tls_adopt(tls, c, m->ssl, m->rest, m->rest_len, &tc)) != 0) {
      np__conn_close(c, NULL);
      goto err_free;
    }
    m->ssl = NULL;
    m->rest = NULL;
    m->rest_len = 0;
    c = tc;
  }
  *out = c;
  return 0;

err_free : {
  /* The connection cannot go on: end it for the peer. pre stays the caller's. */
  char *pre = m->pre;
  size_t pre_len = m->pre_len;
  m->pre = NULL;
  np__moved_free(m);
  m->pre = pre;
  m->pre_len = pre_len;
}
  return r;
}
