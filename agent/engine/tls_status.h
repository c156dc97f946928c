// What a step of TLS over memory answers (TlsSession, TlsRecordLayer).
#pragma once

namespace meshlock::engine {

enum class TlsStatus {
  Done,       // the step finished (handshake complete, bytes read/written)
  NeedRead,   // more ciphertext must be fed first (send output() before waiting)
  WantFlush,  // output() holds bytes that must be sent before anything else can happen
  Closed,     // the peer sent close_notify: no more plaintext will come
  Error,      // fatal; reason() says why; output() may hold an alert worth sending
};

const char* toString(TlsStatus status);

}  // namespace meshlock::engine
