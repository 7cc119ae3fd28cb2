/* Logged-in sessions by id: what a pre-opened work connection (WORK_IDLE) and a datagram-path
 * packet name. Found in a hash rather than by a walk over every connection, so that a peer naming
 * ids that do not exist (it may send them as fast as it likes: neither is proven yet) costs a
 * lookup, not a walk. */
#include <stdlib.h>

#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "server.h"

struct np__session_id {
  uint64_t id;
  session *s;
  UT_hash_handle hh;
};

int np__session_ids_add(struct np_server *srv, session *s) {
  struct np__session_id *e = malloc(sizeof(*e));

  if (e == NULL)
    return UV_ENOMEM;
  e->id = s->id;
  e->s = s;
  HASH_ADD(hh, srv->ids, id, sizeof(e->id), e);
  if (e->hh.tbl == NULL) { /* the table could not grow */
    free(e);
    return UV_ENOMEM;
  }
  return 0;
}

session *np__session_ids_find(const struct np_server *srv, uint64_t id) {
  struct np__session_id *e;

  HASH_FIND(hh, srv->ids, &id, sizeof(id), e);
  return e != NULL ? e->s : NULL;
}

void np__session_ids_del(struct np_server *srv, const session *s) {
  struct np__session_id *e;

  HASH_FIND(hh, srv->ids, &s->id, sizeof(s->id), e);
  if (e != NULL && e->s == s) {
    HASH_DEL(srv->ids, e);
    free(e);
  }
}

void np__session_ids_clear(struct np_server *srv) {
  struct np__session_id *e, *tmp;

  HASH_ITER(hh, srv->ids, e, tmp) {
    HASH_DEL(srv->ids, e);
    free(e);
  }
}
