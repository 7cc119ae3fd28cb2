#!/bin/sh
# Build the Go yamux peer and run the interop driver against it:
#   run-yamux-interop.sh DRIVER PEER_SOURCE_DIR OUT_DIR
# The peer is built with Debian's golang-go against Debian's golang-github-hashicorp-yamux-dev
# (GOPATH mode over /usr/share/gocode: no modules, no network), into OUT_DIR with its build cache
# there too, so a clean clone builds it and a rebuild costs little. Without Go the test is skipped
# (77, meson's code for it); with Go and without the yamux sources it fails.
set -eu
driver=$1 src=$2 out=$3
gocode=/usr/share/gocode

if ! command -v go >/dev/null 2>&1; then
  echo "SKIP: 'go' not found: the HashiCorp yamux interop test needs Debian's golang-go and"
  echo "golang-github-hashicorp-yamux-dev (scripts/deps --test installs both)"
  exit 77
fi
if [ ! -d "$gocode/src/github.com/hashicorp/yamux" ]; then
  echo "FAIL: Go is here but HashiCorp's yamux is not ($gocode/src/github.com/hashicorp/yamux):"
  echo "apt-get install golang-github-hashicorp-yamux-dev (or scripts/deps --test)"
  exit 1
fi
mkdir -p "$out"
out=$(cd "$out" && pwd) # GOCACHE must be absolute
GOPATH=$gocode GO111MODULE=off GOPROXY=off GOFLAGS= GOENV=off GOCACHE="$out/gocache" CGO_ENABLED=0 \
  go build -o "$out/yamuxpeer" "$src/main.go"
exec "$driver" "$out/yamuxpeer"
