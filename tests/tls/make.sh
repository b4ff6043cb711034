#!/usr/bin/env bash
# Makes the TLS fixtures of the unit and integration tests: a test CA and two
# server certificates it signed (localhost, 127.0.0.1), valid for 100 years.
# Test material only: the keys are public. Run again to replace them.
set -euo pipefail
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
  -subj "/CN=berth test CA" -keyout ca.key -out ca.crt 2>/dev/null
for n in a b; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=berth test $n" \
    -keyout "$n.key" -out "$n.csr" 2>/dev/null
  openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 36500 \
    -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') \
    -out "$n.crt" 2>/dev/null
  rm "$n.csr"
done
cat b.crt ca.crt > b-chain.crt
rm -f ca.srl
