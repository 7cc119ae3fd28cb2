/* Prints the library's key table, a key per line: kind, key, flag, arg, default, default in words
 * ("-" for none), tab-separated. What check-options.py compares the docs and --help with. */
#include <stdio.h>

#include <natproxy.h>

static const char *or_dash(const char *s) {
  return s != NULL ? s : "-";
}

int main(void) {
  const np_config_kind kinds[2] = {NP_CONFIG_SERVER, NP_CONFIG_CLIENT};

  for (int k = 0; k < 2; k++) {
    const char *key;
    for (size_t i = 0; (key = np_config_key(kinds[k], i)) != NULL; i++)
      printf("%s\t%s\t%s\t%s\t%s\t%s\n", k == 0 ? "server" : "client", key,
             np_config_key_attr(kinds[k], key, NP_CONFIG_ATTR_FLAG),
             or_dash(np_config_key_attr(kinds[k], key, NP_CONFIG_ATTR_ARG)),
             or_dash(np_config_key_attr(kinds[k], key, NP_CONFIG_ATTR_DEFAULT)),
             or_dash(np_config_key_attr(kinds[k], key, NP_CONFIG_ATTR_DEFAULT_TEXT)));
  }
  return ferror(stdout) ? 1 : 0;
}
