# Seed-compatible mode: the article's three ports and text protocol, which has no TLS: --insecure.
# np-server standing in for the article's server (its client dials 8009, 8008; visitors come to 8007):
np-server --codec line --insecure --bind 0.0.0.0:8009 --tunnel-bind 0.0.0.0:8008 --visit-bind 0.0.0.0:8007
# np-client standing in for the article's client, against the article's server on host H:
np-client --codec line --insecure --server H:8009 --tunnel H:8008 --local 127.0.0.1:32768
