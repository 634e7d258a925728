"""Signs JWTs and makes JWKs with PyJWT, an implementation independent of the gateway's.

Reads a JSON list of jobs on stdin and prints a JSON list of results, one per job:
  {"op": "sign", "alg": "HS256", "secret_b64": "...", "claims": {...}, "headers": {...}}
  {"op": "sign", "alg": "RS256", "key_file": "/path/private.pem", "claims": {...}}
  {"op": "sign", "alg": "none", "claims": {...}}
  {"op": "raw_hs256", "secret_b64": "...", "claims": {...}, "headers": {...}}
      HS256 over arbitrary key bytes (PyJWT refuses PEM-looking secrets), for forgery tests.
  {"op": "jwk", "public_file": "/path/public.pem", "kid": "k1"}
"""
import base64
import hashlib
import hmac
import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(job):
    alg = job["alg"]
    headers = job.get("headers") or None
    if alg == "none":
        return jwt.encode(job["claims"], None, algorithm="none", headers=headers)
    if alg.startswith("HS"):
        key = base64.b64decode(job["secret_b64"])
    else:
        with open(job["key_file"], "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    return jwt.encode(job["claims"], key, algorithm=alg, headers=headers)


def raw_hs256(job):
    header = {"alg": "HS256", "typ": "JWT"}
    header.update(job.get("headers") or {})
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(job["claims"], separators=(",", ":")).encode())
    )
    key = base64.b64decode(job["secret_b64"])
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)


def jwk(job):
    with open(job["public_file"], "rb") as f:
        public = serialization.load_pem_public_key(f.read())
    if isinstance(public, rsa.RSAPublicKey):
        out = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        out["alg"] = "RS256"
    elif isinstance(public, ec.EllipticCurvePublicKey):
        out = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
        out["alg"] = "ES256"
    else:
        raise ValueError("unsupported key type")
    out["kid"] = job["kid"]
    out["use"] = "sig"
    return out


OPS = {"sign": sign, "raw_hs256": raw_hs256, "jwk": jwk}

jobs = json.load(sys.stdin)
json.dump([OPS[j["op"]](j) for j in jobs], sys.stdout)
