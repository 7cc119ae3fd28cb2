/* Live relays an owner must be able to cut at once: a client's joins when it closes, a server
 * session's joined visitors when it ends (and the one the client reports failed). Both sides keep
 * such a set, so it is one module: an intrusive list of items with an abort hook, in no order. */
#ifndef NP_TRACK_H
#define NP_TRACK_H

#include <stdint.h>

typedef struct np__track np__track;

typedef struct np__trackset {
  np__track *head;
} np__trackset;

struct np__track {
  np__trackset *set; /* NULL while in none (never added, removed, or its set was cut) */
  uint64_t id;       /* the owner's name for it (the server: its visitor's id); 0: none */
  const void *tag;   /* what it belongs to, only compared (the server: its proxy); NULL: none */
  /* Cut it now; it ends later through its own callback, which removes it (a no-op by then). */
  void (*abort)(np__track *t);
  /* Optional: the owner learnt how it will end (the server: "local_failed"). */
  void (*note)(np__track *t, const char *end);
  np__track *prev, *next;
};

/* set NULL: t is in no set (np__track_remove is then a no-op). */
void np__track_add(np__trackset *set, np__track *t);
void np__track_remove(np__track *t);
/* Take every item out of set, then abort each: an abort that ends its item at once cannot disturb
 * the walk. */
void np__track_abort_all(np__trackset *set);
/* Abort the items tagged tag (their proxy goes alone), as np__track_abort_all does. */
void np__track_abort_tag(np__trackset *set, const void *tag);
/* Tell each item named id how it will end. */
void np__track_note(np__trackset *set, uint64_t id, const char *end);

#endif
