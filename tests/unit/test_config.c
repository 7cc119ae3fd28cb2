/* Configuration: files, flags, -R specs, and errors that name the file and line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <natproxy.h>

#include "config.h"
#include "mux.h"
#include "mux_core.h"
#include "tmpfile.h"

static char path[64];

static void collect(const char *key, void *arg) {
  strcat(arg, key);
  strcat(arg, " ");
}

static struct np_config *load(np_config_kind kind, const char *text, int *rc) {
  struct np_config *cfg;

  write_tmp(path, text);
  assert_int_equal(np_config_new(kind, &cfg), 0);
  *rc = np_config_load_file(cfg, path);
  unlink(path);
  return cfg;
}

static void expect_error(np_config_kind kind, const char *text, const char *where,
                         const char *what) {
  char want[128];
  int rc;
  struct np_config *cfg = load(kind, text, &rc);
  assert_int_equal(rc, NP_ECONFIG);
  snprintf(want, sizeof(want), "%s:%s", path, where);
  if (strstr(np_config_error(cfg), want) == NULL || strstr(np_config_error(cfg), what) == NULL)
    fail_msg("error '%s' lacks '%s' or '%s'", np_config_error(cfg), want, what);
  np_config_free(cfg);
}

static void test_server_file(void **state) {
  int rc;
  struct np_config *cfg = load(NP_CONFIG_SERVER,
                               "; comment\n"
                               "[server]\n"
                               "bind = 127.0.0.1:7001\n"
                               "token = s3cret\n"
                               "allow_ports = 2000-3000, 4000\n"
                               "heartbeat_interval = 500ms\n"
                               "heartbeat_timeout = 2s\n"
                               "pending_timeout = 1m\n"
                               "access_log = false\n",
                               &rc);
  (void)state;
  assert_int_equal(rc, 0);
  assert_int_equal(cfg->access_log, 0);
  assert_int_equal(np_config_validate(cfg), 0);
  assert_string_equal(cfg->bind, "127.0.0.1:7001");
  assert_string_equal(cfg->token, "s3cret");
  assert_true(cfg->heartbeat_interval_ms == 500 && cfg->heartbeat_timeout_ms == 2000);
  assert_true(cfg->pending_timeout_ms == 60000);
  assert_true(np__ports_allow(&cfg->allow_ports, 2000) && np__ports_allow(&cfg->allow_ports, 3000));
  assert_true(np__ports_allow(&cfg->allow_ports, 4000));
  assert_false(np__ports_allow(&cfg->allow_ports, 3001) ||
               np__ports_allow(&cfg->allow_ports, 1999));
  /* Flags given after the file win. */
  assert_int_equal(np_config_set_flag(cfg, "bind", "127.0.0.1:7002"), 0);
  assert_string_equal(cfg->bind, "127.0.0.1:7002");
  assert_int_equal(np_config_set_flag(cfg, "access-log", "true"), 0);
  assert_int_equal(cfg->access_log, 1);
  np_config_free(cfg);
}

static void test_client_file(void **state) {
  int rc;
  struct np_config *cfg = load(NP_CONFIG_CLIENT,
                               "[client]\n"
                               "server = tunnel.example:7000\n"
                               "name = laptop\n"
                               "[proxy web]\n"
                               "local = localhost:8080\n"
                               "remote_port = 6000\n"
                               "[proxy ssh]\n"
                               "type = tcp\n"
                               "local = 127.0.0.1:22\n"
                               "remote_port = 0\n"
                               "bind_addr = 127.0.0.1\n",
                               &rc);
  (void)state;
  assert_int_equal(rc, 0);
  assert_int_equal(np_config_validate(cfg), 0);
  assert_int_equal(cfg->n_proxies, 2);
  assert_string_equal(cfg->proxies[0].name, "web");
  assert_int_equal(cfg->proxies[0].remote_port, 6000);
  assert_string_equal(cfg->proxies[1].bind_addr, "127.0.0.1");
  assert_int_equal(cfg->proxies[1].remote_port, 0);
  np_config_free(cfg);
}

/* The commented examples in docs/ are files the tools take. */
static void test_examples(void **state) {
  static const struct {
    np_config_kind kind;
    const char *file;
  } ex[] = {{NP_CONFIG_SERVER, "server.ini"},
            {NP_CONFIG_CLIENT, "client.ini"},
            {NP_CONFIG_SERVER, "try-server.ini"},
            {NP_CONFIG_CLIENT, "try-client.ini"}};
  const char *root = getenv("NP_SOURCE_ROOT");

  (void)state;
  if (root == NULL)
    skip();
  for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
    struct np_config *cfg;
    char p[1024];
    snprintf(p, sizeof(p), "%s/docs/examples/%s", root, ex[i].file);
    assert_int_equal(np_config_new(ex[i].kind, &cfg), 0);
    if (np_config_load_file(cfg, p) != 0 || np_config_validate(cfg) != 0)
      fail_msg("%s", np_config_error(cfg));
    np_config_free(cfg);
  }
}

static void test_file_errors(void **state) {
  (void)state;
  expect_error(NP_CONFIG_SERVER, "[server]\nbind = 127.0.0.1:7000\nbogus = 1\n",
               "3:", "unknown key 'bogus'");
  expect_error(NP_CONFIG_SERVER, "[server]\n\nheartbeat_timeout = 10 parsecs\n",
               "3:", "heartbeat_timeout");
  expect_error(NP_CONFIG_SERVER, "[server]\nallow_ports = 3000-2000\n", "2:", "bad port or range");
  expect_error(NP_CONFIG_SERVER, "[server]\nallow_ports = 0\n", "2:", "bad port or range");
  expect_error(NP_CONFIG_SERVER, "[server]\nbind = localhost\n", "2:", "IP:PORT");
  expect_error(NP_CONFIG_SERVER, "[server]\nbind = 127.0.0.1:70000\n", "2:", "IP:PORT");
  expect_error(NP_CONFIG_SERVER, "[client]\nserver = a:1\n", "2:", "unknown section [client]");
  expect_error(NP_CONFIG_SERVER, "[server]\nthis line has no equals sign\n", "2:", "syntax error");
  expect_error(NP_CONFIG_SERVER, "bind = 1.2.3.4:5\n", "1:", "before any [section]");
  expect_error(NP_CONFIG_SERVER, "[server]\nlog_level = loud\n", "2:", "log_level");
  {
    /* Longer than inih's line buffer: refused, not split into two lines. */
    char text[400];
    snprintf(text, sizeof(text), "[server]\ntls_dir = /%0250d\nbind = 1.2.3.4:5\n", 1);
    expect_error(NP_CONFIG_SERVER, text, "2:", "line longer than 198 bytes");
  }
  expect_error(NP_CONFIG_CLIENT,
               "[client]\n[proxy aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\nlocal = a:1\n",
               "2:", "section name longer than 49 bytes");
  expect_error(NP_CONFIG_SERVER, "[server]\ncodec = json\n", "2:", "not a codec");
  expect_error(NP_CONFIG_SERVER, "[server]\nmax_pending = -1\n", "2:", "not a number");
  expect_error(NP_CONFIG_CLIENT, "[client]\nserver = x:1\n[proxy web]\nlocal = nowhere\n",
               "4:", "HOST:PORT");
  expect_error(NP_CONFIG_CLIENT, "[client]\n[proxy web]\ncolour = blue\n",
               "3:", "unknown key 'colour' in [proxy web]");
  expect_error(NP_CONFIG_CLIENT, "[client]\n[proxy web]\ntype = sctp\n", "3:", "not a proxy type");
}

static void test_missing_file(void **state) {
  struct np_config *cfg;
  (void)state;
  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &cfg), 0);
  assert_int_equal(np_config_load_file(cfg, "/nonexistent/np.ini"), UV_ENOENT);
  assert_non_null(strstr(np_config_error(cfg), "/nonexistent/np.ini: cannot open"));
  np_config_free(cfg);
}

static void test_remote_specs(void **state) {
  struct np_config *cfg;
  (void)state;
  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cfg), 0);
  assert_int_equal(np_config_add_remote(cfg, "8080:localhost:80"), 0);
  assert_int_equal(np_config_add_remote(cfg, "127.0.0.1:0:10.1.2.3:22"), 0);
  assert_int_equal(np_config_add_remote(cfg, "[::1]:9000:[::1]:9001"), 0);
  assert_int_equal(cfg->n_proxies, 3);
  assert_int_equal(cfg->proxies[0].remote_port, 8080);
  assert_string_equal(cfg->proxies[0].local, "localhost:80");
  assert_string_equal(cfg->proxies[0].bind_addr, "");
  assert_string_equal(cfg->proxies[1].bind_addr, "127.0.0.1");
  assert_int_equal(cfg->proxies[1].remote_port, 0);
  assert_string_equal(cfg->proxies[2].bind_addr, "::1");
  assert_string_equal(cfg->proxies[2].local, "[::1]:9001");
  assert_int_equal(np_config_add_remote(cfg, "8080:localhost:81"), NP_ECONFIG); /* twice */
  assert_int_equal(np_config_add_remote(cfg, "80:localhost"), NP_ECONFIG);
  assert_int_equal(np_config_add_remote(cfg, "a:b:c:d:e"), NP_ECONFIG);
  assert_int_equal(np_config_add_remote(cfg, "99999:h:1"), NP_ECONFIG);
  assert_int_equal(np_config_add_remote(cfg, "1:h:99999"), NP_ECONFIG);
  assert_int_equal(cfg->n_proxies, 3);
  /* UDP (-U): its own names, so the same port may carry TCP and UDP */
  assert_int_equal(np_config_set_flag(cfg, "U", "8080:localhost:53"), 0);
  assert_int_equal(cfg->n_proxies, 4);
  assert_string_equal(cfg->proxies[3].name, "udp-8080");
  assert_int_equal(cfg->proxies[3].kind, NP_PROXY_UDP);
  assert_int_equal(cfg->proxies[0].kind, NP_PROXY_TCP);
  assert_int_equal(np_config_set_flag(cfg, "U", "8080:localhost:54"), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "-U 8080:localhost:54: the same remote port"));
  assert_int_equal(np_config_set(cfg, "proxy dns", "type", "udp"), 0);
  assert_int_equal(np_config_set(cfg, "proxy dns", "type", "sctp"), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "tcp, udp, http, https, stcp, xtcp or sudp"));
  np_config_free(cfg);
}

/* Private proxies and their visitors: [proxy] stcp/sudp keys, [visitor NAME], -L, and what
 * validate refuses (docs/config.md, "Private services"). */
static void test_private(void **state) {
  struct np_config *cfg;
  (void)state;
  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cfg), 0);
  assert_int_equal(np_config_set(cfg, "client", "server", "127.0.0.1:7000"), 0);
  /* a client of visitors alone is valid */
  assert_int_equal(np_config_set_flag(cfg, "L", "6000:alice.ssh"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG); /* no secret yet */
  assert_non_null(strstr(np_config_error(cfg), "secret_key is missing"));
  assert_int_equal(np_config_set_flag(cfg, "secret-key", "k"), 0);
  assert_int_equal(np_config_validate(cfg), 0);
  assert_int_equal(cfg->n_visitors, 1);
  assert_string_equal(cfg->visitors[0].name, "stcp-6000");
  assert_string_equal(cfg->visitors[0].bind, "127.0.0.1:6000");
  assert_string_equal(cfg->visitors[0].server_name, "alice.ssh");
  assert_int_equal(cfg->visitors[0].kind, NP_PROXY_STCP);
  assert_int_equal(np_config_add_local(cfg, "[::1]:6001:bob.db"), 0);
  assert_string_equal(cfg->visitors[1].bind, "[::1]:6001");
  assert_int_equal(np_config_add_local(cfg, "0.0.0.0:6002:carol.web"), 0);
  assert_string_equal(cfg->visitors[2].bind, "0.0.0.0:6002");
  assert_int_equal(np_config_add_local(cfg, "6000:x.y"), NP_ECONFIG); /* the same port twice */
  assert_int_equal(np_config_add_local(cfg, "6003:nodot"), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "is not OWNER.PROXY"));
  assert_int_equal(np_config_add_local(cfg, "6003:.ssh"), NP_ECONFIG);
  assert_int_equal(np_config_add_local(cfg, "99999:a.b"), NP_ECONFIG);
  assert_int_equal(np_config_add_local(cfg, "a:b:c:d.e"), NP_ECONFIG);
  assert_int_equal(np_config_add_local(cfg, "6003"), NP_ECONFIG);
  assert_int_equal(cfg->n_visitors, 3);
  /* [visitor NAME] */
  assert_int_equal(np_config_set(cfg, "visitor dns", "type", "sudp"), 0);
  assert_int_equal(np_config_set(cfg, "visitor dns", "type", "xudp"), NP_ECONFIG);
  assert_int_equal(np_config_set(cfg, "visitor dns", "bind", "5353"), 0);
  assert_string_equal(cfg->visitors[3].bind, "127.0.0.1:5353");
  assert_int_equal(np_config_set(cfg, "visitor dns", "bind", "nowhere:x"), NP_ECONFIG);
  assert_int_equal(np_config_set(cfg, "visitor dns", "remote_port", "1"), NP_ECONFIG);
  assert_non_null(
      strstr(np_config_error(cfg), "known: type, server_name, secret_key, bind, direct"));
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "server_name = OWNER.PROXY is missing"));
  assert_int_equal(np_config_set(cfg, "visitor dns", "server_name", "alice.dns"), 0);
  assert_int_equal(np_config_validate(cfg), 0);
  assert_int_equal(cfg->visitors[3].kind, NP_PROXY_SUDP);
  /* direct paths: xtcp is stcp with direct = true; not for sudp */
  assert_int_equal(np_config_set(cfg, "visitor x", "type", "xtcp"), 0);
  assert_int_equal(cfg->visitors[4].kind, NP_PROXY_STCP);
  assert_true(cfg->visitors[4].direct);
  assert_int_equal(np_config_set(cfg, "visitor x", "direct", "maybe"), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "direct: 'maybe' is not true or false"));
  assert_int_equal(np_config_set(cfg, "visitor x", "direct", "false"), 0);
  assert_false(cfg->visitors[4].direct);
  assert_int_equal(np_config_set(cfg, "visitor x", "server_name", "alice.ssh"), 0);
  assert_int_equal(np_config_set(cfg, "visitor x", "bind", "7000"), 0);
  assert_int_equal(np_config_validate(cfg), 0);
  assert_int_equal(np_config_set(cfg, "visitor dns", "direct", "true"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "direct = true is for stcp visitors only"));
  assert_int_equal(np_config_set(cfg, "visitor dns", "direct", "no"), 0);
  /* an owner's private proxies */
  assert_int_equal(np_config_set(cfg, "proxy ssh", "type", "stcp"), 0);
  assert_int_equal(np_config_set(cfg, "proxy ssh", "local", "127.0.0.1:22"), 0);
  assert_int_equal(np_config_set(cfg, "proxy ssh", "allow_users", "bob, carol"), 0);
  assert_string_equal(cfg->proxies[0].allow_users, "bob,carol");
  assert_int_equal(np_config_set(cfg, "proxy ssh", "allow_users", "a\x01b"), NP_ECONFIG);
  assert_int_equal(np_config_validate(cfg), 0); /* the [client]'s secret_key serves */
  assert_int_equal(np_config_set(cfg, "proxy ssh", "remote_port", "2222"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "a private proxy has no public port"));
  np_config_free(cfg);

  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cfg), 0);
  assert_int_equal(np_config_set(cfg, "client", "server", "127.0.0.1:7000"), 0);
  assert_int_equal(np_config_set(cfg, "proxy ssh", "type", "stcp"), 0);
  assert_int_equal(np_config_set(cfg, "proxy ssh", "local", "127.0.0.1:22"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "needs secret_key"));
  assert_int_equal(np_config_set(cfg, "proxy web", "local", "127.0.0.1:80"), 0);
  assert_int_equal(np_config_set(cfg, "proxy web", "remote_port", "80"), 0);
  assert_int_equal(np_config_set(cfg, "proxy web", "secret_key", "k"), 0);
  assert_int_equal(np_config_set(cfg, "proxy ssh", "secret_key", "k"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "are for private proxies"));
  np_config_free(cfg);

  /* the server has no visitors */
  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &cfg), 0);
  assert_int_equal(np_config_set(cfg, "visitor x", "bind", "1"), NP_ECONFIG);
  assert_int_equal(np_config_add_local(cfg, "1:a.b"), NP_ECONFIG);
  np_config_free(cfg);
}

/* type = http: its keys, the lists that may come on several lines, and what validate refuses. */
static void test_http_proxy(void **state) {
  struct np_config *cfg;
  (void)state;
  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cfg), 0);
  assert_int_equal(np_config_set(cfg, "client", "server", "127.0.0.1:7000"), 0);
  assert_int_equal(np_config_set(cfg, "proxy web", "type", "http"), 0);
  assert_int_equal(np_config_set(cfg, "proxy web", "local", "127.0.0.1:8080"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "needs custom_domains"));
  assert_int_equal(
      np_config_set(cfg, "proxy web", "custom_domains", "a.example.com, *.b.example.com"), 0);
  assert_int_equal(np_config_set(cfg, "proxy web", "custom_domains", "C.example.com"), 0);
  assert_string_equal(cfg->proxies[0].custom_domains,
                      "a.example.com,*.b.example.com,C.example.com");
  assert_int_equal(np_config_set(cfg, "proxy web", "custom_domains", "a b"), 0); /* two items */
  assert_int_equal(np_config_set(cfg, "proxy web", "custom_domains", "x\x01y"), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "is not a host name"));
  assert_int_equal(np_config_set(cfg, "proxy web", "locations", "/api, /static/"), 0);
  assert_int_equal(np_config_set(cfg, "proxy web", "locations", "api"), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "is not a path"));
  assert_int_equal(np_config_set(cfg, "proxy web", "subdomain", "blog.x"), NP_ECONFIG);
  assert_int_equal(np_config_set(cfg, "proxy web", "subdomain", "blog"), 0);
  assert_int_equal(np_config_set(cfg, "proxy web", "http_user", "a:b"), NP_ECONFIG);
  assert_int_equal(np_config_set(cfg, "proxy web", "http_user", "alice"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "http_user and http_password go together"));
  assert_int_equal(np_config_set(cfg, "proxy web", "http_password", "s3cret"), 0);
  assert_int_equal(np_config_validate(cfg), 0);
  assert_int_equal(np_config_set(cfg, "proxy web", "remote_port", "80"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "share the server's vhost_http_port"));
  /* the HTTP keys on a TCP proxy are a mistake worth saying */
  assert_int_equal(np_config_set(cfg, "proxy ssh", "local", "127.0.0.1:22"), 0);
  assert_int_equal(np_config_set(cfg, "proxy ssh", "remote_port", "2222"), 0);
  assert_int_equal(np_config_set(cfg, "proxy ssh", "custom_domains", "ssh.example.com"), 0);
  assert_int_equal(np_config_set(cfg, "proxy web", "remote_port", "0"), 0);
  cfg->proxies[0].remote_port = -1;
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "are for type = http"));
  /* a list past its room is refused, not cut */
  for (int i = 0; i < 200; i++) {
    char v[64];
    snprintf(v, sizeof(v), "host-%03d.example.com", i);
    if (np_config_set(cfg, "proxy many", "custom_domains", v) != 0) {
      assert_true(i > 50);
      assert_non_null(strstr(np_config_error(cfg), "the list is longer than"));
      break;
    }
    assert_true(i < 199);
  }
  np_config_free(cfg);

  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &cfg), 0);
  assert_int_equal(np_config_set(cfg, "server", "vhost_http_port", "8080"), 0);
  assert_int_equal(cfg->vhost_http_port, 8080);
  assert_int_equal(np_config_set(cfg, "server", "vhost_http_port", "65536"), NP_ECONFIG);
  assert_int_equal(np_config_set(cfg, "server", "subdomain_host", "*.example.com"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "subdomain_host"));
  assert_int_equal(np_config_set(cfg, "server", "subdomain_host", "example.com"), 0);
  assert_int_equal(np_config_validate(cfg), 0);
  assert_int_equal(cfg->vhost_http_timeout_ms, 60000);
  assert_int_equal(np_config_set(cfg, "server", "vhost_http_timeout", "500ms"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "vhost_http_timeout must be at least 1s"));
  assert_int_equal(np_config_set(cfg, "server", "vhost_http_timeout", "5m"), 0);
  assert_int_equal(np_config_validate(cfg), 0);
  assert_int_equal(cfg->vhost_http_timeout_ms, 300000);
  np_config_free(cfg);
}

static void test_validate(void **state) {
  struct np_config *cfg;
  (void)state;
  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cfg), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "no server"));
  assert_int_equal(np_config_set_flag(cfg, "server", "127.0.0.1:7000"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "no proxies"));
  assert_int_equal(np_config_set_flag(cfg, "R", "0:127.0.0.1:80"), 0);
  assert_int_equal(np_config_validate(cfg), 0);
  assert_int_equal(np_config_set_flag(cfg, "heartbeat-timeout", "1s"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "heartbeat_timeout"));
  assert_int_equal(np_config_set_flag(cfg, "no-such-flag", "1"), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "--no-such-flag"));
  /* Fingerprints as np-server and `openssl x509 -fingerprint -sha256` print them, or bare hex. */
  assert_int_equal(np_config_set_flag(cfg, "server-fingerprint",
                                      "sha256:94:53:D1:D1:96:45:B9:B5:5E:02:ED:66:5D:52:87:F1:0A:"
                                      "03:B2:50:11:2D:2D:ED:47:08:FC:83:B2:BB:2C:C6"),
                   0);
  assert_int_equal(
      np_config_set_flag(cfg, "server-fingerprint",
                         "9453d1d19645b9b55e02ed665d5287f10a03b250112d2ded4708fc83b2bb2c"
                         "c6"),
      0);
  assert_int_equal(np_config_set_flag(cfg, "server-fingerprint", "sha256:94:53"), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "not a SHA-256 fingerprint"));
  assert_int_equal(
      np_config_set_flag(cfg, "server-fingerprint",
                         "9453d1d19645b9b55e02ed665d5287f10a03b250112d2ded4708fc83b2bb2c"
                         "c6ff"),
      NP_ECONFIG);
  assert_int_equal(
      np_config_set_flag(cfg, "server-fingerprint",
                         "x453d1d19645b9b55e02ed665d5287f10a03b250112d2ded4708fc83b2bb2c"
                         "c6"),
      NP_ECONFIG);
  assert_int_equal(np_config_set_flag(cfg, "insecure", "maybe"), NP_ECONFIG);
  /* A budget for all streams' windows smaller than one stream's growth is a mistake. */
  assert_int_equal(np_config_set_flag(cfg, "heartbeat-timeout", "30s"), 0);
  assert_int_equal(np_config_validate(cfg), 0);
  assert_int_equal(np_config_set_flag(cfg, "mux-session-window", "1048576"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "mux_session_window must be at least"));
  assert_int_equal(np_config_set_flag(cfg, "mux-max-window", "1310720"), 0);
  assert_int_equal(np_config_validate(cfg), 0);
  np_config_free(cfg);

  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &cfg), 0);
  assert_int_equal(cfg->access_log, 1); /* on by default */
  assert_int_equal(np_config_set_flag(cfg, "access-log", "sometimes"), NP_ECONFIG);
  assert_int_equal(np_config_set_flag(cfg, "codec", "line"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "--insecure")); /* the seed protocol has no TLS */
  assert_int_equal(np_config_set_flag(cfg, "insecure", "true"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "tunnel_bind"));
  assert_int_equal(np_config_set_flag(cfg, "tls-cert", "/c.pem"), 0);
  assert_int_equal(np_config_set_flag(cfg, "codec", "native"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "tls_key"));
  assert_int_equal(np_config_set_flag(cfg, "tls-key", "/k.pem"), 0);
  assert_int_equal(np_config_set_flag(cfg, "proxy-bind-addr", "nowhere"), 0);
  assert_int_equal(np_config_set_flag(cfg, "codec", "native"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "proxy_bind_addr"));
  assert_int_equal(np_config_set_flag(cfg, "proxy-bind-addr", "127.0.0.1"), 0);
  assert_int_equal(np_config_validate(cfg), 0);
  assert_int_equal(np_config_set_flag(cfg, "mux-server-window", "0"), 0);
  assert_int_equal(np_config_validate(cfg), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(cfg), "mux_session_window and mux_server_window"));
  np_config_free(cfg);
}

/* A reload makes the configuration again from its sources: the file as it is now, then the flags
 * given after it (which still win), in order; any error leaves nothing. */
static void test_reread(void **state) {
  struct np_config *cfg, *again = NULL;
  char err[600], diff[256] = "";
  FILE *f;
  (void)state;

  write_tmp(path, "[client]\nserver = 127.0.0.1:7000\nwork_pool = 2\n[proxy a]\nlocal = "
                  "127.0.0.1:80\nremote_port = 8080\n");
  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cfg), 0);
  assert_int_equal(np_config_load_file(cfg, path), 0);
  assert_int_equal(np_config_set_flag(cfg, "work-pool", "3"), 0);
  assert_int_equal(np_config_set_flag(cfg, "R", "9000:127.0.0.1:22"), 0);
  assert_int_equal(np_config_set(cfg, "client", "dial_timeout", "7s"), 0);
  assert_int_equal(np_config_set_flag(cfg, "work-pool", "nonsense"), NP_ECONFIG); /* not kept */
  assert_int_equal(np_config_validate(cfg), 0);

  f = fopen(path, "w");
  fputs("[client]\nserver = 127.0.0.1:7001\nwork_pool = 9\n[proxy b]\nlocal = 127.0.0.1:81\n"
        "remote_port = 8081\n",
        f);
  fclose(f);
  assert_int_equal(np__config_reread(cfg, &again, err, sizeof(err)), 0);
  assert_string_equal(again->server, "127.0.0.1:7001");
  assert_int_equal(again->work_pool, 3); /* the flag still wins */
  assert_int_equal(again->dial_timeout_ms, 7000);
  assert_int_equal(again->n_proxies, 2);
  assert_string_equal(again->proxies[0].name, "b");
  assert_int_equal(again->proxies[1].remote_port, 9000);
  np__config_diff(cfg, again, collect, diff);
  assert_string_equal(diff, "server "); /* work_pool: the flag held it at 3 */
  np_config_free(again);

  f = fopen(path, "w");
  fputs("[client]\nserver = 127.0.0.1:7001\nwork_pool = x\n", f);
  fclose(f);
  assert_int_equal(np__config_reread(cfg, &again, err, sizeof(err)), NP_ECONFIG);
  assert_null(again);
  assert_non_null(strstr(err, ":3: work_pool"));
  unlink(path);
  assert_int_not_equal(np__config_reread(cfg, &again, err, sizeof(err)), 0);
  assert_null(again);
  np_config_free(cfg);
}

/* Whether /etc/hosts names localhost: without it (a debootstrap chroot has none) the name would go
 * to a name server, which a test never asks. */
static int hosts_has_localhost(void) {
  char line[256];
  int found = 0;
  FILE *f = fopen("/etc/hosts", "r");
  if (f == NULL)
    return 0;
  while (!found && fgets(line, sizeof(line), f) != NULL)
    found = line[0] != '#' && strstr(line, "localhost") != NULL;
  fclose(f);
  return found;
}

/* --server HOST dials port 7000; --bind :PORT listens on every IPv4 address; a host name to bind
 * is resolved at once (localhost: /etc/hosts, no name server). */
static void test_default_port_and_bind_forms(void **state) {
  struct np_config *c, *s;
  (void)state;

  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &c), 0);
  assert_int_equal(np_config_set(c, "client", "server", "tunnel.example.com"), 0);
  assert_string_equal(c->server, "tunnel.example.com:7000");
  assert_int_equal(np_config_set(c, "client", "server", "::1"), 0);
  assert_string_equal(c->server, "[::1]:7000");
  assert_int_equal(np_config_set(c, "client", "server", "[2001:db8::1]"), 0);
  assert_string_equal(c->server, "[2001:db8::1]:7000");
  assert_int_equal(np_config_set(c, "client", "server", "10.0.0.1:443"), 0);
  assert_string_equal(c->server, "10.0.0.1:443");
  np_config_free(c);

  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &s), 0);
  assert_int_equal(np_config_set_flag(s, "bind", ":7000"), 0);
  assert_string_equal(s->bind, "0.0.0.0:7000");
  if (hosts_has_localhost()) {
    assert_int_equal(np_config_set_flag(s, "bind", "localhost:7001"), 0);
    assert_true(strcmp(s->bind, "127.0.0.1:7001") == 0 || strcmp(s->bind, "[::1]:7001") == 0);
  }
  assert_int_equal(np_config_set_flag(s, "admin-bind", ":7400"), 0);
  assert_string_equal(s->admin_bind, "0.0.0.0:7400");
  assert_int_equal(np_config_set_flag(s, "bind", "127.0.0.1"), NP_ECONFIG); /* a port is needed */
  np_config_free(s);
}

/* server = a, b: each item gets its default port and is checked; the list is kept normalised and
 * np__config_servers hands the items back one by one. */
/* route_store's URL: redis://HOST[:PORT][/DB], and what is refused. */
static void test_route_store_url(void **state) {
  static const char *const bad[] = {"",
                                    "redis://",
                                    "http://a:1",
                                    "redis://:6379",
                                    "redis://a:0",
                                    "redis://a:65536",
                                    "redis://a/",
                                    "redis://a/x",
                                    "redis://a/-1",
                                    "redis://a b",
                                    "redis://a:1:2",
                                    "redis://[::1",
                                    "redis://a/1/2"};
  char host[NP_HOSTPORT_MAX];
  int port, db;
  (void)state;

  assert_int_equal(np__config_route_store("redis://10.0.0.5", host, sizeof(host), &port, &db), 0);
  assert_string_equal(host, "10.0.0.5");
  assert_int_equal(port, 6379);
  assert_int_equal(db, 0);
  assert_int_equal(
      np__config_route_store("redis://store.example.org:7379/3", host, sizeof(host), &port, &db),
      0);
  assert_string_equal(host, "store.example.org");
  assert_int_equal(port, 7379);
  assert_int_equal(db, 3);
  assert_int_equal(np__config_route_store("redis://[::1]:6380", host, sizeof(host), &port, &db), 0);
  assert_string_equal(host, "::1");
  assert_int_equal(port, 6380);
  assert_int_equal(np__config_route_store("redis://[::1]", host, sizeof(host), &port, &db), 0);
  assert_int_equal(port, 6379);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(np__config_route_store(bad[i], host, sizeof(host), &port, &db), UV_EINVAL);
}

static void test_server_list(void **state) {
  struct np_config *c;
  char one[NP_MAX_SERVERS][NP_HOSTPORT_MAX];
  (void)state;

  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &c), 0);
  assert_int_equal(np_config_set(c, "client", "server", "a.example.org, [::1], 10.0.0.2:443 "), 0);
  assert_string_equal(c->server, "a.example.org:7000,[::1]:7000,10.0.0.2:443");
  assert_int_equal(np__config_servers(c->server, one, NP_MAX_SERVERS), 3);
  assert_string_equal(one[0], "a.example.org:7000");
  assert_string_equal(one[1], "[::1]:7000");
  assert_string_equal(one[2], "10.0.0.2:443");
  assert_int_equal(np__config_servers(c->server, one, 1), 3); /* counts past max, copies max */
  assert_int_equal(np_config_set(c, "client", "server", "a,,b"), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(c), "an empty item"));
  assert_int_equal(np_config_set(c, "client", "server", "a:7000, a"), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(c), "a:7000 is listed twice"));
  assert_int_equal(np_config_set(c, "client", "server", "a,b,c,d,e,f,g,h,i"), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(c), "at most 8 servers"));
  assert_int_equal(np_config_set(c, "client", "server", "a,b,c,d,e,f,g,h"), 0);
  assert_int_equal(np__config_servers(c->server, one, NP_MAX_SERVERS), 8);
  np_config_free(c);

  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &c), 0);
  assert_int_equal(np_config_set(c, "client", "server", "a, b"), 0);
  assert_int_equal(np_config_set(c, "client", "codec", "line"), 0);
  assert_int_equal(np_config_set(c, "client", "insecure", "true"), 0);
  assert_int_equal(np_config_validate(c), NP_ECONFIG);
  assert_non_null(strstr(np_config_error(c), "codec line talks to one server"));
  np_config_free(c);
}

/* The key table is the one source of the defaults: each kind lists its keys with a flag, a help
 * line and, where it has one, a default that np_config_new applied (setting it again changes
 * nothing); the constants other modules fall back on agree with it. */
static void test_key_table(void **state) {
  const np_config_kind kinds[2] = {NP_CONFIG_SERVER, NP_CONFIG_CLIENT};
  struct np_config *c;
  (void)state;

  for (int k = 0; k < 2; k++) {
    const char *key;
    size_t n = 0;
    for (size_t i = 0; (key = np_config_key(kinds[k], i)) != NULL; i++, n++) {
      const char *def = np_config_key_attr(kinds[k], key, NP_CONFIG_ATTR_DEFAULT);
      struct np_config *again;
      assert_non_null(np_config_key_attr(kinds[k], key, NP_CONFIG_ATTR_FLAG));
      assert_non_null(np_config_key_attr(kinds[k], key, NP_CONFIG_ATTR_HELP));
      if (def == NULL)
        continue;
      assert_int_equal(np_config_new(kinds[k], &c), 0);
      assert_int_equal(np_config_new(kinds[k], &again), 0);
      assert_int_equal(np_config_set(again, NULL, key, def), 0);
      again->replay_len = 0; /* the record of the set, which is not a value */
      memset(again->replay, 0, sizeof(again->replay));
      assert_memory_equal(c, again, sizeof(*c));
      np_config_free(c);
      np_config_free(again);
    }
    assert_true(n > 30);
  }
  assert_null(np_config_key(NP_CONFIG_SERVER, 1000));
  assert_null(np_config_key_attr(NP_CONFIG_SERVER, "tofu", NP_CONFIG_ATTR_FLAG)); /* client's */
  assert_string_equal(np_config_key_attr(NP_CONFIG_CLIENT, "tofu", NP_CONFIG_ATTR_FLAG),
                      "trust-on-first-use");
  assert_null(np_config_key_attr(NP_CONFIG_CLIENT, "tofu", NP_CONFIG_ATTR_ARG)); /* a switch */
  assert_string_equal(np_config_key_attr(NP_CONFIG_CLIENT, "name", NP_CONFIG_ATTR_DEFAULT_TEXT),
                      "the host name");

  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &c), 0);
  assert_int_equal(c->work_pool, NP_DEFAULT_WORK_POOL);
  assert_int_equal(c->mux, NP_DEFAULT_MUX);
  assert_int_equal(c->relay_splice, NP_DEFAULT_SPLICE);
  assert_int_equal(c->mux_max_window, NP_MUX_DEFAULT_MAX_WINDOW);
  assert_int_equal(c->mux_max_streams, NP_MUX_DEFAULT_MAX_STREAMS);
  assert_int_equal(c->mux_session_window, NP_MUX_DEFAULT_SESSION_WINDOW);
  assert_int_equal(c->max_proxies_per_client, NP_MAX_PROXIES);
  assert_string_equal(c->bind, "0.0.0.0:7000");
  assert_int_equal(np_config_set_flag(c, "trust-on-first-use", "true"), 0);
  assert_int_equal(c->tofu, 1);
  np_config_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_server_file),     cmocka_unit_test(test_client_file),
      cmocka_unit_test(test_examples),        cmocka_unit_test(test_file_errors),
      cmocka_unit_test(test_missing_file),    cmocka_unit_test(test_remote_specs),
      cmocka_unit_test(test_validate),        cmocka_unit_test(test_http_proxy),
      cmocka_unit_test(test_reread),          cmocka_unit_test(test_default_port_and_bind_forms),
      cmocka_unit_test(test_key_table),       cmocka_unit_test(test_server_list),
      cmocka_unit_test(test_route_store_url), cmocka_unit_test(test_private),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
