// Workload identity for the mesh: what the engine, the agent's main and the
// admin API include. Everything is BoringSSL; nothing here touches a socket.
//
// Wiring (agent main, once):
//
//   auto identities = identity::IdentityManager::create({
//       .caDirectory = "/var/lib/meshlock/ca",          // Istio cacerts layout, or empty:
//       .trustDomain = *identity::TrustDomain::parse("cluster.local"),  // a root is generated
//       .certificateLifetime = std::chrono::hours(24),
//       .tls = {.minVersion = identity::TlsMinVersion::kTls12},  // mesh minProtocolVersion
//   });
//   // every second, from the agent's timer:
//   identities->tick(identity::systemNow());   // renewals, CA/bundle reloads, ticket keys
//   // a pod of service account sa in namespace ns appears / goes:
//   identities->acquire(id);  ...  identities->release(id);
//
// Engine, inbound (TLS server for local workload `dst`):
//
//   auto ssl = identities->newServerSession(dst);            // or SSL_new(*serverContext(dst))
//   // (optionally setExpectedPeers(ssl, ExpectedPeers::oneOf({...})) to restrict clients)
//   SSL_set_bio(ssl, rbio, wbio); ... SSL_do_handshake(ssl) until done or failed
//   if done:   identity::peerIdentity(ssl)  -> the client's SpiffeId (policy, logs)
//   if failed: identity::verifyFailure(ssl) -> {reason, detail}: count by
//              identity::toString(reason) ("expired", "unknown_ca", "san_mismatch", ...)
//              (empty when the failure was not about the certificate, e.g. no
//              client certificate at all, a version or cipher mismatch)
//
// Engine, outbound ISTIO_MUTUAL (TLS client for local workload `src`):
//
//   auto ssl = identities->newClientSession(src, ExpectedPeers::oneOf({destinationId}));
//   // a client with no expected peers refuses every server (secure naming fails closed)
//   if (cached) SSL_set_session(ssl, cached);    // optional resumption
//   ... handshake as above; then peerIdentity(ssl) is the server's SpiffeId
//   after reading some data: takeResumableSession(ssl) -> cache per destination
//
// Engine, outbound DestinationRule SIMPLE / MUTUAL:
//
//   identity::DestinationTlsContexts destinations(settings);    // one per agent
//   auto ssl = destinations.newSession(config);  // SNI set; files re-read when changed
//   ... handshake; verifyFailure(ssl) names the rule on refusal
//
// Guarantees:
// - Verification runs inside the handshake (SSL_CTX_set_custom_verify): a refused
//   peer fails the handshake and the reason stays on the SSL (ex_data).
// - serverContext()/clientContext() return new references. A renewal or a trust
//   bundle change builds new contexts for new handshakes; established
//   connections keep theirs and are never disturbed.
// - Sessions are bound to the certificate and the bundle they were made with:
//   after either changes, an old ticket or session id is not resumed.
// - Session ticket keys are shared by all contexts and threads, rotated hourly
//   by tick(), and the two previous keys still decrypt (and get re-issued).
// - IdentityManager and DestinationTlsContexts are thread-safe and contexts may
//   be shared by threads; one SSL is used by one thread at a time.
#pragma once

#include "identity/destination_tls.h"
#include "identity/identity_manager.h"
#include "identity/mesh_ca.h"
#include "identity/peer_verifier.h"
#include "identity/spiffe_id.h"
#include "identity/tls_context.h"
#include "identity/trust_bundle.h"
