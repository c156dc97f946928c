// TlsSession: BoringSSL over two ByteQueues via a minimal custom BIO, so the
// record layer reads and writes engine-owned memory that is freed when idle.
#include "engine/tls_session.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <array>
#include <mutex>

namespace meshlock::engine {
namespace {

// The output BIO's data pointer is the ByteQueue it appends to; the input
// BIO's is the session's Input, of which it hands out whole records only.
int queueWrite(BIO* bio, const char* data, int len) {
  auto* queue = static_cast<ByteQueue*>(BIO_get_data(bio));
  queue->append({reinterpret_cast<const std::byte*>(data), static_cast<size_t>(len)});
  return len;
}

long queueCtrl(BIO* bio, int cmd, long, void*) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_WPENDING:
      return static_cast<long>(static_cast<ByteQueue*>(BIO_get_data(bio))->size());
    default:
      return 0;
  }
}

template <typename Input>
int wholeRecordsRead(BIO* bio, char* out, int len) {
  auto* input = static_cast<Input*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (input->whole == 0) {
    BIO_set_retry_read(bio);
    return -1;
  }
  const size_t n = input->bytes.read(
      {reinterpret_cast<std::byte*>(out), std::min(static_cast<size_t>(len), input->whole)});
  input->whole -= n;
  return static_cast<int>(n);
}

long inputCtrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

BIO_METHOD* newMethod(const char* name) {
  BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, name);
  MESHLOCK_CHECK(m != nullptr);
  return m;
}

bssl::UniquePtr<BIO> makeBio(const BIO_METHOD* method, void* data) {
  bssl::UniquePtr<BIO> bio(BIO_new(method));
  MESHLOCK_CHECK(bio != nullptr);
  BIO_set_data(bio.get(), data);
  BIO_set_init(bio.get(), 1);
  return bio;
}

// The largest record TLS 1.2 allows (RFC 5246 6.2.3).
constexpr size_t kLongestRecord = 16384 + 2048;

}  // namespace

const char* toString(TlsStatus status) {
  switch (status) {
    case TlsStatus::Done: return "done";
    case TlsStatus::NeedRead: return "need-read";
    case TlsStatus::WantFlush: return "want-flush";
    case TlsStatus::Closed: return "closed";
    case TlsStatus::Error: return "error";
  }
  return "?";
}

bssl::UniquePtr<X509> peerLeaf(const SSL* ssl) {
  const STACK_OF(CRYPTO_BUFFER)* chain = SSL_get0_peer_certificates(ssl);
  if (chain == nullptr || sk_CRYPTO_BUFFER_num(chain) == 0) return nullptr;
  return bssl::UniquePtr<X509>(X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, 0)));
}

std::string spiffeIdOf(X509* cert) {
  if (cert == nullptr) return {};
  bssl::UniquePtr<GENERAL_NAMES> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (!names) return {};
  for (size_t i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    if (name->type != GEN_URI) continue;
    const ASN1_STRING* uri = name->d.uniformResourceIdentifier;
    std::string value(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                      static_cast<size_t>(ASN1_STRING_length(uri)));
    if (value.starts_with("spiffe://")) return value;
  }
  return {};
}

Result<std::unique_ptr<TlsSession>> TlsSession::create(Role role, const SslContextRef& ctx,
                                                       std::string_view server_name, TlsHooks hooks) {
  if (!ctx) return fail("tls: no SSL_CTX");
  std::unique_ptr<TlsSession> session(new TlsSession());
  session->ssl_.reset(SSL_new(ctx.get()));
  if (!session->ssl_) return fail("tls: SSL_new: " + drainSslErrors());
  SSL* ssl = session->ssl_.get();
  // Both BIOs are owned by the SSL (SSL_set_bio takes one reference each).
  static const BIO_METHOD* const input_method = [] {
    BIO_METHOD* m = newMethod("meshlock-records-in");
    BIO_meth_set_read(m, wholeRecordsRead<Input>);
    BIO_meth_set_ctrl(m, inputCtrl);
    return m;
  }();
  static const BIO_METHOD* const output_method = [] {
    BIO_METHOD* m = newMethod("meshlock-records-out");
    BIO_meth_set_write(m, queueWrite);
    BIO_meth_set_ctrl(m, queueCtrl);
    return m;
  }();
  SSL_set_bio(ssl, makeBio(input_method, &session->input_).release(), makeBio(output_method, &session->output_).release());
  if (role == Role::Client) {
    SSL_set_connect_state(ssl);
    if (!server_name.empty() &&
        !SSL_set_tlsext_host_name(ssl, std::string(server_name).c_str())) {
      return fail("tls: SNI " + std::string(server_name) + ": " + drainSslErrors());
    }
  } else {
    SSL_set_accept_state(ssl);
  }
  // Idle connections are the common case: drop the handshake-only
  // configuration (certificates, keys, cipher lists) once it is done.
  SSL_set_shed_handshake_config(ssl, 1);
  if (hooks.prepare) {
    if (Status prepared = hooks.prepare(ssl); !prepared) return std::unexpected(prepared.error().context("tls"));
  }
  session->verifier_ = std::move(hooks.verify_peer);
  session->releaser_ = std::move(hooks.release);
  session->explainer_ = std::move(hooks.explain_failure);
  return session;
}

void TlsSession::feed(std::span<const std::byte> ciphertext) {
  input_.bytes.append(ciphertext);
  if (records_) return;  // the record layer finds its own boundaries
  std::array<std::byte, 5> header;
  while (input_.bytes.peek(input_.whole, header) == header.size()) {
    const size_t length = (static_cast<size_t>(header[3]) << 8) | static_cast<size_t>(header[4]);
    const auto type = static_cast<uint8_t>(header[0]);
    // Not a TLS record header (content types 20-23, version 3.x): BoringSSL
    // refuses it at once rather than waiting for a "record" that never ends.
    if (type < 20 || type > 23 || header[1] != std::byte{3} || length > kLongestRecord) {
      input_.whole = input_.bytes.size();
      break;
    }
    if (input_.bytes.size() - input_.whole < header.size() + length) break;
    input_.whole += header.size() + length;
  }
}

Result<std::unique_ptr<TlsSession>> TlsSession::resume(TlsHandover handover) {
  Result<std::unique_ptr<TlsRecordLayer>> records = TlsRecordLayer::create(handover.keys);
  if (!records) return std::unexpected(records.error());
  std::unique_ptr<TlsSession> session(new TlsSession());
  session->records_ = std::move(*records);
  session->resumed_info_ = std::move(handover.info);
  session->input_.bytes.append(handover.unread);
  session->output_.append(handover.unsent);
  session->handshake_done_ = true;
  return session;
}

Result<TlsHandover> TlsSession::handOver() {
  if (failed_) return fail("tls: the connection failed: " + reason_);
  if (!handshake_done_) return fail("tls: the handshake has not completed");
  TlsHandover handover;
  if (records_) {
    if (records_->pendingPlaintext() > 0) return fail("tls: plaintext not yet read");
    if (records_->closeNotifySent()) return fail("tls: close_notify was sent");
    handover.keys = records_->keys();
    handover.info = resumed_info_;
  } else {
    SSL* ssl = ssl_.get();
    if (SSL_get_shutdown(ssl) != 0) return fail("tls: close_notify was sent or received");
    // Whole records only reach BoringSSL (Input), so anything it holds is
    // plaintext not yet read or a record not yet opened: read first.
    if (SSL_has_pending(ssl) || input_.whole > 0) return fail("tls: received records not yet read");
    Result<TrafficKeys> keys = exportTrafficKeys(ssl);
    if (!keys) return std::unexpected(keys.error());
    handover.keys = std::move(*keys);
    handover.info = info();
  }
  handover.unread = input_.bytes.takeAll();
  input_.whole = 0;
  handover.unsent = output_.takeAll();
  failed_ = true;
  reason_ = "tls: handed over";
  return handover;
}

TlsSession::~TlsSession() {
  if (handshake_done_ && releaser_ && ssl_) releaser_(ssl_.get());
}

TlsStatus TlsSession::failWith(const char* operation, int ret) {
  int code = SSL_get_error(ssl_.get(), ret);
  error_ = static_cast<uint32_t>(ERR_peek_error());
  std::string errors = drainSslErrors();
  reason_ = std::string(operation) + ": ";
  if (code == SSL_ERROR_SYSCALL || (code == SSL_ERROR_SSL && errors.empty())) {
    reason_ += "unexpected end of stream or internal error (SSL error " + std::to_string(code) + ")";
  } else {
    reason_ += errors.empty() ? "SSL error " + std::to_string(code) : errors;
  }
  if (explainer_) {
    if (std::string why = explainer_(ssl_.get()); !why.empty()) reason_ += " (" + why + ")";
  }
  failed_ = true;
  return TlsStatus::Error;
}

bool TlsSession::peerRefusedOurCertificate() const {
  if (ERR_GET_LIB(error_) != ERR_LIB_SSL) return false;
  switch (ERR_GET_REASON(error_)) {
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    case SSL_R_TLSV1_ALERT_CERTIFICATE_REQUIRED:
      return true;
    default:
      return false;
  }
}

TlsStatus TlsSession::wantStatus() const {
  return output_.empty() ? TlsStatus::NeedRead : TlsStatus::WantFlush;
}

TlsStatus TlsSession::handshake() {
  if (failed_) return TlsStatus::Error;
  if (records_) return TlsStatus::Done;
  if (handshake_done_) return TlsStatus::Done;
  int ret = SSL_do_handshake(ssl_.get());
  if (ret != 1) {
    int code = SSL_get_error(ssl_.get(), ret);
    if (code == SSL_ERROR_WANT_READ) return wantStatus();
    return failWith("handshake", ret);
  }
  SSL* ssl = ssl_.get();
  if (verifier_) {
    Result<std::string> identity = verifier_(ssl);
    verifier_ = nullptr;  // its captures are not needed by an idle connection
    if (!identity) {
      reason_ = "peer verification: " + identity.error().describe();
      failed_ = true;
      // The client's Finished is already queued: drop it so the server never
      // completes a handshake with a peer we refused. No alert either: it
      // would be sealed after the dropped record and read as a bad MAC.
      output_.clear();
      return TlsStatus::Error;
    }
    peer_identity_ = std::move(*identity);
  } else {
    peer_identity_ = spiffeIdOf(peerLeaf(ssl).get());
  }
  handshake_done_ = true;
  return TlsStatus::Done;
}

TlsInfo TlsSession::info() const {
  if (records_) return resumed_info_;
  TlsInfo info;
  if (!handshake_done_) return info;
  const SSL* ssl = ssl_.get();
  info.version = SSL_get_version(ssl);
  if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl)) info.cipher = SSL_CIPHER_get_name(cipher);
  info.resumed = SSL_session_reused(ssl) == 1;
  info.peer_identity = peer_identity_;
  if (const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) info.server_name = sni;
  return info;
}

TlsStatus TlsSession::read(ByteQueue& plaintext, size_t limit) {
  if (failed_) return TlsStatus::Error;
  if (records_) return fromRecords(records_->open(input_.bytes, plaintext, limit, output_));
  // Nothing fed and nothing decrypted ahead: do not make `plaintext` allocate a chunk.
  if (input_.bytes.empty() && SSL_pending(ssl_.get()) == 0 && !(SSL_get_shutdown(ssl_.get()) & SSL_RECEIVED_SHUTDOWN)) {
    return TlsStatus::NeedRead;
  }
  TlsStatus status = readInto(plaintext, limit);
  plaintext.releaseIfEmpty();
  input_.bytes.releaseIfEmpty();
  return status;
}

TlsStatus TlsSession::readInto(ByteQueue& plaintext, size_t limit) {
  size_t added = 0;
  while (added < limit) {
    std::span<std::byte> tail = plaintext.writableTail();
    size_t want = std::min(tail.size(), limit - added);
    int ret = SSL_read(ssl_.get(), tail.data(), static_cast<int>(want));
    if (ret > 0) {
      plaintext.commit(static_cast<size_t>(ret));
      added += static_cast<size_t>(ret);
      continue;
    }
    int code = SSL_get_error(ssl_.get(), ret);
    if (code == SSL_ERROR_WANT_READ) return TlsStatus::NeedRead;
    if (code == SSL_ERROR_ZERO_RETURN) return TlsStatus::Closed;
    return failWith("read", ret);
  }
  return TlsStatus::Done;
}

TlsStatus TlsSession::fromRecords(TlsStatus status) {
  if (status == TlsStatus::Error) {
    reason_ = records_->reason();
    failed_ = true;
  }
  return status;
}

TlsStatus TlsSession::write(std::span<const std::byte> plaintext) {
  if (failed_) return TlsStatus::Error;
  if (records_) return fromRecords(records_->seal(plaintext, output_));
  while (!plaintext.empty()) {
    int n = static_cast<int>(std::min<size_t>(plaintext.size(), 1 << 30));
    int ret = SSL_write(ssl_.get(), plaintext.data(), n);
    if (ret <= 0) return failWith("write", ret);
    plaintext = plaintext.subspan(static_cast<size_t>(ret));
  }
  return TlsStatus::Done;
}

TlsStatus TlsSession::shutdown() {
  if (failed_) return TlsStatus::Error;
  if (records_) return fromRecords(records_->close(output_));
  int ret = SSL_shutdown(ssl_.get());
  if (ret < 0) {
    int code = SSL_get_error(ssl_.get(), ret);
    if (code != SSL_ERROR_WANT_READ) return failWith("shutdown", ret);
  }
  return TlsStatus::Done;
}

}  // namespace meshlock::engine
