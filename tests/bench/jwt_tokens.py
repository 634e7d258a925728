"""Tokens for the JWT benchmark targets, signed with the `cryptography` package (not with
Portcullis' own code). Usage: jwt_tokens.py DIR COLD_COUNT
Writes DIR/{hs256,rs256,es256}.txt (one token each) and DIR/rs256_many.txt (COLD_COUNT
distinct RS256 tokens of one user), from DIR/rsa.pem, DIR/ec.pem and DIR/hmac.secret."""
import base64, json, os, sys, time
from multiprocessing import Pool

from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

D = sys.argv[1]
COLD = int(sys.argv[2])


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def load(name):
    with open(os.path.join(D, name), "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def signing_input(alg, claims):
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{head}.{b64(json.dumps(claims).encode())}"


def claims(jti):
    now = int(time.time())
    return {"sub": "bench-user", "iat": now - 10, "exp": now + 86400, "jti": jti}


_RSA = None


def rs256(i):
    # Loading (and checking) an RSA private key costs tens of milliseconds: once per process.
    global _RSA
    if _RSA is None:
        _RSA = load("rsa.pem")
    key = _RSA
    si = signing_input("RS256", claims(f"cold-{i}"))
    sig = key.sign(si.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{si}.{b64(sig)}"


def main():
    secret = open(os.path.join(D, "hmac.secret"), "rb").read().strip()
    si = signing_input("HS256", claims("hs"))
    h = hmac.HMAC(secret, hashes.SHA256())
    h.update(si.encode())
    tokens = {"hs256": f"{si}.{b64(h.finalize())}", "rs256": rs256("hot")}
    eck = load("ec.pem")
    si = signing_input("ES256", claims("es"))
    r, s = utils.decode_dss_signature(eck.sign(si.encode(), ec.ECDSA(hashes.SHA256())))
    tokens["es256"] = f"{si}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    for name, t in tokens.items():
        with open(os.path.join(D, f"{name}.txt"), "w") as f:
            f.write(t + "\n")
    with Pool(max(1, os.cpu_count() or 1)) as pool:
        many = pool.map(rs256, range(COLD), chunksize=500)
    with open(os.path.join(D, "rs256_many.txt"), "w") as f:
        f.write("\n".join(many) + "\n")


if __name__ == "__main__":
    main()
