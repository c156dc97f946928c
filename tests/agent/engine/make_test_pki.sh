#!/usr/bin/env bash
# Throwaway PKI for the engine tests: a mesh CA, workload certificates with
# SPIFFE URI SANs, and a foreign CA with a client certificate of its own.
# Usage: make_test_pki.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
[ -f done ] && exit 0

ca() {  # name subject
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/O=meshlock test/CN=$2" -keyout "$1.key" -out "$1.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
leaf() {  # name ca spiffe-id
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=meshlock test" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=URI:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 30 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "mesh root"
ca foreign-ca "foreign root"
leaf client ca spiffe://cluster.local/ns/shop/sa/client
leaf server ca spiffe://cluster.local/ns/shop/sa/server
leaf other ca spiffe://cluster.local/ns/shop/sa/other
leaf foreign foreign-ca spiffe://cluster.local/ns/shop/sa/client
touch done
