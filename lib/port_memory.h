/* The ports np-server gave to proxies that asked for port 0, by client and proxy name, so that a
 * client that comes back (after a reconnect, or the server's restart: the table is kept in the
 * server's state directory) gets the port it had. Bounded: the least recently given go first. Not
 * installed. */
#ifndef NP_PORT_MEMORY_H
#define NP_PORT_MEMORY_H

#include <stddef.h>
#include <stdint.h>

/* Entries kept at most: a server's clients x proxies, and then some; the file (about 1.5 MB at
 * most) is rewritten whole on the loop a second after a change. */
#define NP_PORT_MEMORY_MAX 16384

typedef struct np__port_memory np__port_memory;

int np__port_memory_new(size_t max, np__port_memory **out);
void np__port_memory_free(np__port_memory *m);
/* The port client's proxy had, or 0. */
int np__port_memory_recall(np__port_memory *m, const char *client, const char *proxy);
/* client's proxy has port now (the most recently used entry; the oldest goes past max). 1 when
 * that changed the table, 0 when it knew it already, UV_ENOMEM. */
int np__port_memory_note(np__port_memory *m, const char *client, const char *proxy, int port);
size_t np__port_memory_count(const np__port_memory *m);
/* *out: a copy of m, with the same ages, so that a table shared between threads can be copied under
 * its lock and written to its file outside it. 0 or UV_ENOMEM (*out untouched). */
int np__port_memory_clone(const np__port_memory *m, np__port_memory **out);
/* Read the file path wrote (lines "CLIENT<TAB>PROXY<TAB>PORT", oldest first; '#' comments without
 * a tab): 0 (a missing file is an empty table), or NP_ECONFIG with "PATH:LINE: why" (the first bad
 * line; the others are skipped too and the rest is read), or the open error in err. */
int np__port_memory_load(np__port_memory *m, const char *path, char *err, size_t errlen);
/* Write the table to path atomically (a temporary file renamed over it, mode 0600). 0 or the
 * error. */
int np__port_memory_save(const np__port_memory *m, const char *path);

#endif
