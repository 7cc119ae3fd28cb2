/* Sets of live relays (track.h). */
#include "track.h"

#include <stddef.h>

#include "internal.h"

void np__track_add(np__trackset *set, np__track *t) {
  t->set = set;
  t->prev = t->next = NULL;
  if (set != NULL)
    NP_DLIST_PUSH(set->head, t, prev, next);
}

void np__track_remove(np__track *t) {
  if (t->set != NULL)
    NP_DLIST_UNLINK(t->set->head, t, prev, next);
  t->set = NULL;
}

void np__track_abort_all(np__trackset *set) {
  np__track *all = set->head;

  /* Every item out first: from here on an item's own end finds itself in no set. */
  for (np__track *t = all; t != NULL; t = t->next)
    t->set = NULL;
  set->head = NULL;
  while (all != NULL) {
    np__track *t = all;
    all = t->next;
    t->prev = t->next = NULL;
    t->abort(t);
  }
}

void np__track_abort_tag(np__trackset *set, const void *tag) {
  np__track *cut = NULL, *next;

  for (np__track *t = set->head; t != NULL; t = next) {
    next = t->next;
    if (t->tag != tag)
      continue;
    NP_DLIST_UNLINK(set->head, t, prev, next);
    t->set = NULL;
    t->prev = NULL;
    t->next = cut;
    cut = t;
  }
  while (cut != NULL) {
    np__track *t = cut;
    cut = t->next;
    t->next = NULL;
    t->abort(t);
  }
}

void np__track_note(np__trackset *set, uint64_t id, const char *end) {
  for (np__track *t = set->head; t != NULL; t = t->next)
    if (t->id == id && t->note != NULL)
      t->note(t, end);
}
