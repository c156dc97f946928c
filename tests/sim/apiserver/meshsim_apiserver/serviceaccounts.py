"""Service-account tokens, issued and checked as kube-apiserver does it: TokenRequest
(POST .../serviceaccounts/NAME/token, what the kubelet asks for a pod's projected
token and what `kubectl create token` sends) signs a JWT, bound to a pod when asked;
TokenReview (POST /apis/authentication.k8s.io/v1/tokenreviews) says who a token is.

Behaviour and error texts follow kubernetes:
pkg/registry/core/serviceaccount/storage/token.go (binding to a pod, its node's name
and uid), pkg/serviceaccount/claims.go (the claims; the validator: the service
account and the bound pod must still exist with the uids of the claims),
pkg/serviceaccount/jwt.go (issuer check, token audiences ∩ requested audiences),
pkg/registry/authentication/tokenreview/storage.go (spec.audiences, else the API
server's own; status.audiences is the intersection), and k8s.io/apiserver
authenticator/audiences.go (Intersect), audagnostic.go (a static token is valid
only for the API audiences) and request/bearertoken (an unknown token is "invalid
bearer token"). The user's extras are those of Kubernetes 1.30+ with the
ServiceAccountTokenPodNodeInfo and ServiceAccountTokenJTI gates on (their default).

The signing key (ES256) lives in the run's kube/pki/sa.key, so tokens survive a
restart of the server; it is made on first use (Debian's python3-cryptography)."""
import base64
import binascii
import hashlib
import json
import os
import threading
import time
import uuid

from .auth import User
from .errors import ApiError

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = [ISSUER]  # --api-audiences defaults to --service-account-issuer
DEFAULT_EXPIRATION_SECONDS = 3600
MIN_EXPIRATION_SECONDS = 600
LEEWAY_SECONDS = 60  # go-jose jwt.DefaultLeeway

POD_NAME, POD_UID = "authentication.kubernetes.io/pod-name", "authentication.kubernetes.io/pod-uid"
NODE_NAME, NODE_UID = "authentication.kubernetes.io/node-name", "authentication.kubernetes.io/node-uid"
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"
INVALID_BEARER_TOKEN = "invalid bearer token"
INVALIDATED = "service account token has been invalidated"


class TokenError(Exception):
    """A token of this issuer that does not authenticate; the text is status.error."""


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def intersect(have, wanted):
    """authenticator.Audiences(have).Intersect(wanted): the wanted ones `have` holds, in wanted's order."""
    return [a for a in wanted if a in have]


def go_quoted(items):
    """fmt's %q of a []string, as the audience error prints it: ["a" "b"]."""
    return "[" + " ".join(json.dumps(i) for i in items) + "]"


def _meta(obj):
    return (obj or {}).get("metadata") or {}


class SigningKey:
    """The service-account key pair: made once, kept 0600 in the run's pki/."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.key = None
        self.kid = None

    def _load(self):
        with self.lock:
            if self.key is not None:
                return self.key
            try:
                from cryptography.hazmat.primitives import serialization
                from cryptography.hazmat.primitives.asymmetric import ec
            except ImportError:
                raise ApiError(500, "InternalError", "meshsim apiserver: service-account tokens need python3-cryptography")
            if os.path.exists(self.path):
                with open(self.path, "rb") as f:
                    key = serialization.load_pem_private_key(f.read(), None)
            else:
                key = ec.generate_private_key(ec.SECP256R1())
                pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
                tmp = self.path + ".tmp"
                with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                    f.write(pem)
                os.replace(tmp, self.path)
            der = key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
            self.kid = b64url(hashlib.sha256(der).digest())  # jwt.go keyIDFromPublicKey
            self.key = key
            return key

    def sign(self, claims):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        key = self._load()
        header = {"alg": "ES256", "kid": self.kid}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))  # JWS: r || s

    def verify(self, token):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
        key = self._load()
        signing_input, _, signature = token.rpartition(".")
        try:
            raw = unb64url(signature)
            header = json.loads(unb64url(signing_input.split(".")[0]))
        except (ValueError, binascii.Error):
            return False
        if len(raw) != 64 or not isinstance(header, dict) or header.get("alg") != "ES256":
            return False
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        try:
            key.public_key().verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))
            return True
        except InvalidSignature:
            return False


def unverified_claims(token):
    """The payload of a compact JWS, unverified (jwt.go hasCorrectIssuer), or None."""
    if token.strip().startswith("{"):
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(unb64url(parts[1]))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


class ServiceAccountTokens:
    """Issues JWTs for service accounts and checks them against the store."""

    def __init__(self, store, key_path):
        self.store = store
        self.key = SigningKey(key_path)

    def issue(self, sa, audiences, seconds, pod=None, node=None):
        """(token, expiry as Unix time) for a stored ServiceAccount, bound to a pod when given."""
        now = int(time.time())
        ns, name = _meta(sa)["namespace"], _meta(sa)["name"]
        private = {"namespace": ns, "serviceaccount": {"name": name, "uid": _meta(sa).get("uid", "")}}
        if pod is not None:
            private["pod"] = {"name": _meta(pod)["name"], "uid": _meta(pod).get("uid", "")}
            if node is not None:
                private["node"] = {k: v for k, v in (("name", _meta(node)["name"]), ("uid", _meta(node).get("uid")))
                                   if v}
        claims = {"aud": list(audiences), "exp": now + seconds, "iat": now, "iss": ISSUER, "jti": str(uuid.uuid4()),
                  "kubernetes.io": private, "nbf": now, "sub": f"system:serviceaccount:{ns}:{name}"}
        return self.key.sign(claims), now + seconds

    def is_ours(self, token):
        claims = unverified_claims(token)
        return claims is not None and claims.get("iss") == ISSUER

    def validate(self, token, targets):
        """(User, audiences) for a token of this issuer wanted for `targets`; raises TokenError."""
        if not self.key.verify(token):
            raise TokenError("square/go-jose: error in cryptographic primitive")
        claims = unverified_claims(token)
        aud = claims.get("aud")
        token_auds = [aud] if isinstance(aud, str) else list(aud or []) or API_AUDIENCES
        auds = intersect(token_auds, targets)
        if not auds:
            raise TokenError(f"token audiences {go_quoted(token_auds)} is invalid for the target audiences "
                             f"{go_quoted(targets)}")
        now = time.time()
        if claims.get("exp") is not None and now - LEEWAY_SECONDS > claims["exp"]:
            raise TokenError("service account token has expired")
        if claims.get("nbf") is not None and now + LEEWAY_SECONDS < claims["nbf"]:
            raise TokenError("service account token is not valid yet")
        private = claims.get("kubernetes.io") or {}
        ns = private.get("namespace") or ""
        sa_ref, pod_ref, node_ref = (private.get(k) or {} for k in ("serviceaccount", "pod", "node"))
        sa = self.store.get("/serviceaccounts", ns, sa_ref.get("name", ""))
        if sa is None:
            raise TokenError(f'serviceaccounts "{sa_ref.get("name", "")}" not found')
        if _meta(sa).get("uid") != sa_ref.get("uid"):
            raise TokenError(f"service account UID ({_meta(sa).get('uid')}) does not match claim ({sa_ref.get('uid')})")
        extra = {}
        if pod_ref:
            pod = self.store.get("/pods", ns, pod_ref.get("name", ""))
            if pod is None:
                raise TokenError(INVALIDATED)
            if _meta(pod).get("uid") != pod_ref.get("uid"):
                raise TokenError(f"pod UID ({_meta(pod).get('uid')}) does not match service account pod ref claim "
                                 f"({pod_ref.get('uid')})")
            if _meta(pod).get("deletionTimestamp"):
                raise TokenError(INVALIDATED)
            extra[POD_NAME], extra[POD_UID] = [pod_ref["name"]], [pod_ref["uid"]]
            # For a pod-bound token the node comes from the claims, unchecked (claims.go).
            if node_ref.get("name"):
                extra[NODE_NAME] = [node_ref["name"]]
                if node_ref.get("uid"):
                    extra[NODE_UID] = [node_ref["uid"]]
        if claims.get("jti"):
            extra[CREDENTIAL_ID] = ["JTI=" + claims["jti"]]
        user = User(f"system:serviceaccount:{ns}:{sa_ref['name']}", sa_ref.get("uid", ""),
                    ["system:serviceaccounts", f"system:serviceaccounts:{ns}"], extra)
        return user, auds


class Authenticator:
    """Bearer token → user: the static token file, then service-account JWTs, as
    kube-apiserver's union of token authenticators."""

    def __init__(self, static_tokens, sa_tokens):
        self.static, self.sa = static_tokens, sa_tokens

    def authenticate(self, token, targets):
        """(user, audiences, error); user is None when the token does not authenticate."""
        user = self.static.user(token)
        if user is not None:
            auds = intersect(API_AUDIENCES, targets)  # audagnostic: only the API's own audiences
            if auds:
                return user, auds, None
        if self.sa is not None and self.sa.is_ours(token):
            try:
                user, auds = self.sa.validate(token, targets)
                return user, auds, None
            except TokenError as e:
                return None, [], str(e)
        return None, [], INVALID_BEARER_TOKEN

    def user(self, token):
        """The user of an API request's bearer token, or None."""
        return self.authenticate(token, API_AUDIENCES)[0]


def token_review(authenticator, body):
    """A TokenReview answered (tokenreview/storage.go Create)."""
    if not isinstance(body, dict) or body.get("kind") not in (None, "TokenReview"):
        raise ApiError(400, "BadRequest", f"not a TokenReview: {str(body)[:200]}")
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    token = spec.get("token")
    if not isinstance(token, str) or not token:
        raise ApiError(400, "BadRequest", "token is required for TokenReview in authentication")
    wanted = [a for a in spec.get("audiences") or [] if isinstance(a, str)] or API_AUDIENCES
    user, auds, error = authenticator.authenticate(token, wanted)
    # v1 TokenReviewStatus: authenticated and audiences are omitempty, user is a struct (always there).
    status = {"user": {}}
    if user is not None:
        status = {"authenticated": True, "user": user.user_info(), "audiences": auds}
    if error:
        status["error"] = error
    metadata = dict(body.get("metadata") or {}, creationTimestamp=None)
    return {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": metadata, "spec": spec,
            "status": status}


def token_request(store, sa_tokens, namespace, name, body):
    """A TokenRequest for serviceaccounts/NAME/token answered (serviceaccount/storage/token.go Create)."""
    sa = store.get("/serviceaccounts", namespace, name)
    if sa is None:
        raise ApiError(404, "NotFound", f'serviceaccounts "{name}" not found', {"name": name, "kind": "serviceaccounts"})
    if not isinstance(body, dict) or body.get("kind") not in (None, "TokenRequest"):
        raise ApiError(400, "BadRequest", f"not a TokenRequest: {str(body)[:200]}")
    spec = dict(body.get("spec") or {})
    seconds = spec.get("expirationSeconds")
    if seconds is None:  # v1 defaulting (kubectl create token sends null)
        seconds = DEFAULT_EXPIRATION_SECONDS
    problem = None
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        problem = f"spec.expirationSeconds: Invalid value: {json.dumps(seconds)}: must be an integer"
    elif seconds < MIN_EXPIRATION_SECONDS:
        problem = f"spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"
    elif seconds > 1 << 32:
        problem = f"spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"
    if problem:
        raise ApiError(422, "Invalid", f'TokenRequest.authentication.k8s.io "" is invalid: {problem}',
                       {"group": "authentication.k8s.io", "kind": "TokenRequest",
                        "causes": [{"reason": "FieldValueInvalid", "message": problem.split(": ", 1)[1],
                                    "field": "spec.expirationSeconds"}]})
    audiences = [a for a in spec.get("audiences") or [] if isinstance(a, str)] or API_AUDIENCES
    pod = node = None
    ref = spec.get("boundObjectRef")
    if ref:
        version = ref.get("apiVersion") or ""
        group = version.rpartition("/")[0] if "/" in version else ""
        if group != "" or ref.get("kind") != "Pod":
            raise ApiError(400, "BadRequest", f"cannot bind token to object of type {group}/"
                                              f"{version.rpartition('/')[2]}, Kind={ref.get('kind')} "
                                              "(meshsim binds tokens to pods only)")
        pod_name = ref.get("name") or ""
        pod = store.get("/pods", namespace, pod_name)
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{pod_name}" not found', {"name": pod_name, "kind": "pods"})
        if ((pod.get("spec") or {}).get("serviceAccountName") or "default") != name:
            raise ApiError(400, "BadRequest", f'cannot bind token for serviceaccount "{name}" to pod running with '
                                              "different serviceaccount name.")
        uid = _meta(pod).get("uid", "")
        if ref.get("uid") and ref["uid"] != uid:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on Pod "{pod_name}": the UID in the bound '
                                            f"object reference ({ref['uid']}) does not match the UID in record. The "
                                            "object might have been deleted and then recreated",
                           {"name": pod_name, "kind": "Pod"})
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            # A node that is not (yet) there still gives its name (token.go: IsNotFound).
            node = store.get("/nodes", "", node_name) or {"metadata": {"name": node_name}}
        spec["boundObjectRef"] = dict(ref, uid=uid)
    token, expiry = sa_tokens.issue(sa, audiences, seconds, pod, node)
    spec.update(audiences=audiences, expirationSeconds=seconds)
    return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None}, "spec": spec,
            "status": {"token": token, "expirationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))}}
