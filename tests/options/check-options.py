#!/usr/bin/env python3
"""The options' one source of truth is the library's key table: this compares it (dump-keys) with
docs/config.md's key tables, the man pages' OPTIONS entries and the tools' --help, so a key added,
renamed or given another default without them fails here, naming what to edit.

Usage: check-options.py DUMP_KEYS SOURCE_ROOT NP_SERVER NP_CLIENT
"""
import re
import subprocess
import sys


def table(dump):
    keys = {"server": {}, "client": {}}
    out = subprocess.run([dump], capture_output=True, text=True, check=True, timeout=30).stdout
    for line in out.splitlines():
        kind, key, flag, arg, dflt, text = line.split("\t")
        none = lambda v: None if v == "-" else v  # noqa: E731
        keys[kind][key] = {"flag": flag, "arg": none(arg), "def": none(dflt), "text": none(text)}
    return keys


def doc_default(k):
    """The default column docs/config.md must show for key k."""
    if k["text"] is not None and k["text"] != k["def"]:
        return k["text"]  # words: "the host name"
    if k["def"] is not None:
        return f"`{k['def']}`"
    return "none"


def config_md_rows(path, heading, end):
    """{key: default cell} of the first key table after heading, before the line starting end."""
    rows, inside = {}, False
    for line in open(path, encoding="utf-8"):
        if line.startswith(heading):
            inside = True
        elif inside and line.startswith(end):
            break
        elif inside and line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            names = re.findall(r"`([a-z_]+)`", cells[0])
            parts = cells[1].split(", ")
            for i, n in enumerate(names):
                rows[n] = parts[i] if len(parts) == len(names) > 1 else cells[1]
    return rows


def unroff(text):
    """Roff to plain words, enough to find "default X" in an entry."""
    words = []
    for line in text.splitlines():
        if line.startswith(".") and not line.startswith(".\\\""):
            parts = line.split(None, 1)
            line = parts[1] if len(parts) > 1 else ""
            line = re.sub(r'"([^"]*)"', r"\1", line)
            line = line.replace('" "', "")
        line = re.sub(r"\\f[BIRP]", "", line).replace("\\-", "-").replace("\\(em", "-")
        words.append(line)
    return re.sub(r"\s+", " ", " ".join(words))


def man_entries(path):
    """{flag: (first line, plain text)} of each .TP entry, by the long options its first line
    names."""
    src = open(path, encoding="utf-8").read()
    entries = {}
    for chunk in re.split(r"^\.TP\n", src, flags=re.M)[1:]:
        chunk = re.split(r"^\.(?:SH|SS|TP)\b", chunk, flags=re.M)[0]
        first = chunk.split("\n", 1)[0]
        for flag in re.findall(r"\\-\\-((?:[a-z0-9]|\\-)+)", first):
            entries.setdefault(flag.replace("\\-", "-"), (unroff(first), unroff(chunk)))
    return entries


def main():
    dump, root, server, client = sys.argv[1:5]
    keys = table(dump)
    errors = []
    md = f"{root}/docs/config.md"
    sections = {
        "server": config_md_rows(md, "## np-server", "## "),
        "client": config_md_rows(md, "## np-client", "Each `[proxy NAME]`"),
    }
    tools = {"server": server, "client": client}
    for kind, ks in keys.items():
        rows = sections[kind]
        for key, k in ks.items():
            want = doc_default(k)
            if key not in rows:
                errors.append(f"docs/config.md: [{kind}] has no row for `{key}` (default {want})")
            elif rows[key] != want:
                errors.append(f"docs/config.md: `{key}` ([{kind}]) says default {rows[key]!r}, "
                              f"the key table {want!r}")
        for key in rows.keys() - ks.keys():
            errors.append(f"docs/config.md: [{kind}] documents `{key}`, which is not a key")

        man = man_entries(f"{root}/man/np-{kind}.1")
        for key, k in ks.items():
            flag = f"--{k['flag']}"
            if k["flag"] not in man:
                errors.append(f"man/np-{kind}.1: no .TP entry for {flag}")
                continue
            first, text = man[k["flag"]]
            if k["arg"] is not None and k["arg"] not in first:
                errors.append(f"man/np-{kind}.1: {flag}'s entry does not show its value "
                              f"{k['arg']!r}: {first!r}")
            shown = k["text"] if k["text"] is not None else k["def"]
            if k["arg"] is not None and shown is not None and shown != "required":
                if not re.search(r"default[:,]? " + re.escape(shown) + r"\b", text, re.I):
                    errors.append(f"man/np-{kind}.1: {flag}'s entry does not say "
                                  f"'default {shown}': {text[:160]!r}")

        out = subprocess.run([tools[kind], "--help"], capture_output=True, text=True,
                             timeout=30).stdout
        entries, cur = {}, None
        for line in out.splitlines():
            m = re.match(r"  (?:-\w, |    )--([a-z0-9-]+)", line)
            if m:
                cur = entries.setdefault(m.group(1), [])
            elif not line.startswith(" " * 8):
                cur = None
            if cur is not None:
                cur.append(line)
        for key, k in ks.items():
            text = re.sub(r"\s+", " ", " ".join(entries.get(k["flag"], [])))
            shown = k["text"] if k["text"] is not None else k["def"]
            if not text:
                errors.append(f"np-{kind} --help: no entry for --{k['flag']}")
            elif k["arg"] is not None and shown not in (None, "required") and \
                    f"(default {shown})" not in text and f"(default: {shown})" not in text:
                errors.append(f"np-{kind} --help: --{k['flag']} does not show its default")

    for e in errors:
        print(e)
    print(f"{sum(len(v) for v in keys.values())} keys checked: {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
