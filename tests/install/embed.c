/* A minimal embedder: a server and a client on one loop, started and stopped cleanly, built only
 * from the installed headers and pkg-config. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <natproxy.h>

static int ready; /* the public port, or -1 when the client gave up */

static void on_event(struct np_client *cl, const np_client_event *ev) {
  (void)cl;
  if (ev->type == NP_CLIENT_PROXY_READY)
    ready = ev->port;
  else if (ev->type == NP_CLIENT_FATAL)
    ready = -1;
}

static void quiet(np_log_level level, const char *msg, void *arg) {
  (void)level, (void)msg, (void)arg;
}

int main(void) {
  uv_loop_t loop;
  struct np_config *scfg, *ccfg;
  struct np_server *srv;
  struct np_client *cl;
  char addr[64], dir[] = "/tmp/np-embed-XXXXXX", path[64];

  if (mkdtemp(dir) == NULL)
    return 1;
  alarm(20); /* never hang a CI run */
  uv_loop_init(&loop);
  np_config_new(NP_CONFIG_SERVER, &scfg);
  np_config_set_flag(scfg, "tls-dir", dir); /* TLS is on: the identity goes here */
  np_config_set_flag(scfg, "bind", "127.0.0.1:0");
  np_config_set_flag(scfg, "proxy-bind-addr", "127.0.0.1");
  if (np_server_new(&loop, scfg, &srv) != 0)
    return 1;
  np_server_set_log(srv, NP_LOG_ERROR, quiet, NULL);
  if (np_server_start(srv) != 0)
    return 1;
  np_config_new(NP_CONFIG_CLIENT, &ccfg);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", np_server_port(srv));
  np_config_set_flag(ccfg, "server", addr);
  /* Trust exactly our own server's certificate. */
  np_config_set_flag(ccfg, "server-fingerprint", np_server_fingerprint(srv));
  np_config_add_remote(ccfg, "0:127.0.0.1:9");
  if (np_client_new(&loop, ccfg, &cl) != 0)
    return 1;
  np_client_set_log(cl, NP_LOG_ERROR, quiet, NULL);
  np_client_set_event_cb(cl, on_event);
  np_client_start(cl);
  while (!ready)
    uv_run(&loop, UV_RUN_ONCE);
  np_client_close(cl, NULL);
  np_server_close(srv, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  np_config_free(scfg);
  np_config_free(ccfg);
  snprintf(path, sizeof(path), "%s/server.crt", dir);
  unlink(path);
  snprintf(path, sizeof(path), "%s/server.key", dir);
  unlink(path);
  snprintf(path, sizeof(path), "%s/ports", dir); /* remember_ports: the ports port-0 proxies got */
  unlink(path);
  rmdir(dir);
  if (ready < 0)
    return 1;
  printf("embedded libnatproxy %s: TLS tunnel came up on public port %d\n", np_version_string(),
         ready);
  return uv_loop_close(&loop) == 0 ? 0 : 1;
}
