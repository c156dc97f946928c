#!/bin/sh
# Fails if a binary loads OpenSSL's libssl.so.3 or libcrypto.so.3: they export
# the same symbols as BoringSSL, so one process must never hold both.
# libk5crypto.so.3 (MIT Kerberos' own crypto, pulled by neon's GSSAPI) is fine:
# it shares no symbol with BoringSSL.
set -u
status=0
for binary in "$@"; do
  if ! libs=$(ldd "$binary" 2>&1); then
    echo "ldd $binary failed: $libs"
    status=1
    continue
  fi
  echo "$binary:"
  echo "$libs" | grep -E 'ssl|crypto' | sed 's/^/  /'
  if echo "$libs" | grep -Eq '(^|[[:space:]/])lib(ssl|crypto)\.so\.3 '; then
    openssl_lib=$(echo "$libs" | grep -E '(^|[[:space:]/])lib(ssl|crypto)\.so\.3 ' | grep -v '/android/')
    if [ -n "$openssl_lib" ]; then
      echo "FAIL: $binary loads OpenSSL:"
      echo "$openssl_lib"
      status=1
    fi
  fi
done
exit $status
