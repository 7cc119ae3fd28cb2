#!/bin/sh
# run-fuzzer.sh must fail when the fuzzer fails and keep the failing input after it removes its
# temporary directory (it once deleted the crash artefacts along with it).
set -eu
runner=$1
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
mkdir "$t/seeds"
echo seed > "$t/seeds/a"
# A stand-in fuzzer: writes a crash artefact where libFuzzer would, and fails as libFuzzer does.
cat > "$t/fuzz_fake" <<'FAKE'
#!/bin/sh
for a; do case $a in -artifact_prefix=*) p=${a#-artifact_prefix=} ;; esac; done
printf 'the input' > "${p}crash-0123"
exit 77
FAKE
chmod +x "$t/fuzz_fake"
status=0
(cd "$t" && sh "$runner" "$t/fuzz_fake" "$t/seeds" 1 2>/dev/null) || status=$?
[ "$status" -eq 77 ] || { echo "run-fuzzer.sh exited $status, not the fuzzer's 77"; exit 1; }
[ "$(cat "$t/fuzz-artifacts/fuzz_fake/crash-0123" 2>/dev/null)" = "the input" ] ||
  { echo "the crash artefact was not kept in fuzz-artifacts/"; exit 1; }
[ -z "$(ls -A "$t/seeds" | grep -v '^a$')" ] || { echo "the seed corpus was written to"; exit 1; }
echo "run-fuzzer.sh keeps failing inputs: ok"
