"""An OAuth 2.0 client for end-to-end tests, built on Authlib's requests integration
(`authlib.integrations.requests_client.OAuth2Session`), so the grants are driven by an
implementation independent of the gateway's.

Reads one JSON job on stdin, prints one JSON result on stdout; it never exits non-zero for an
OAuth failure (the test asserts on the result). Every job has "op" and the client's settings:
  client_id, client_secret (null for a public client), auth_method (client_secret_basic |
  client_secret_post | none), redirect_uri, scope.
Ops:
  authorize  authorize_url, response_type (code|token), code_verifier (PKCE S256 when set),
             state, extra (more query parameters). GET the authorization endpoint (expects a
             307 to the login portal), GET the portal (expects a 302 to redirect_uri), then
             parses the redirect with Authlib (state checked): {"code"} or {"token"}.
  token      token_url, grant_type, and the grant's fields: authorization_response (the
             redirect), code (instead of it), code_verifier, redirect_uri, refresh_token,
             username, password. Authlib's fetch_token / refresh_token.
  revoke     revoke_url, token, token_type_hint: Authlib's revoke_token (RFC 7009).
  call       url, access_token: a GET with Authlib's bearer placement.
  metadata   url: GET, then Authlib's RFC 8414 AuthorizationServerMetadata.validate().
Results carry the raw answer: status, headers (lower-case names), body (JSON when it parses).
"""
import json
import sys
import traceback

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.parameters import parse_authorization_code_response
from authlib.oauth2.rfc6749.parameters import parse_implicit_response
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

TIMEOUT = 20


def raw(resp):
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    return {
        "status": resp.status_code,
        "headers": {k.lower(): v for k, v in resp.headers.items()},
        "body": body,
    }


def session(job):
    s = OAuth2Session(
        client_id=job.get("client_id"),
        client_secret=job.get("client_secret"),
        token_endpoint_auth_method=job.get("auth_method"),
        revocation_endpoint_auth_method=job.get("auth_method"),
        redirect_uri=job.get("redirect_uri"),
        scope=job.get("scope"),
        code_challenge_method="S256",
    )
    # Loopback only: a proxy from the environment must not see (or break) the flows.
    s.trust_env = False
    return s


def authorize(job):
    s = session(job)
    params = dict(job.get("extra") or {})
    response_type = job.get("response_type") or "code"
    uri, state = s.create_authorization_url(
        job["authorize_url"],
        state=job.get("state"),
        code_verifier=job.get("code_verifier"),
        response_type=response_type,
        **params,
    )
    first = s.get(uri, allow_redirects=False, timeout=TIMEOUT, withhold_token=True)
    out = {"state": state, "authorize_request": uri, "authorize": raw(first)}
    if first.status_code != 307:
        out["ok"] = False
        return out
    portal_url = first.headers["Location"]
    out["portal_url"] = portal_url
    portal = requests.Session()
    portal.trust_env = False
    second = portal.get(portal_url, allow_redirects=False, timeout=TIMEOUT)
    out["portal"] = raw(second)
    if second.status_code != 302:
        out["ok"] = False
        return out
    redirect = second.headers["Location"]
    out["redirect"] = redirect
    if response_type == "token":
        out["token"] = dict(parse_implicit_response(redirect, state))
    else:
        out["code"] = parse_authorization_code_response(redirect, state)["code"]
    out["ok"] = True
    return out


def token(job):
    s = session(job)
    seen = {}

    def record(resp):
        seen.update(raw(resp))
        return resp

    s.register_compliance_hook("access_token_response", record)
    s.register_compliance_hook("refresh_token_response", record)
    grant = job["grant_type"]
    fields = {
        k: job[k]
        for k in ("code", "code_verifier", "username", "password")
        if job.get(k) is not None
    }
    if "redirect_uri" in job:
        # Sent as given (None: left out), instead of the session's.
        fields["redirect_uri"] = job["redirect_uri"]
    try:
        if grant == "refresh_token":
            tok = s.refresh_token(job["token_url"], refresh_token=job["refresh_token"])
        elif grant == "authorization_code" and job.get("authorization_response"):
            tok = s.fetch_token(
                job["token_url"],
                authorization_response=job["authorization_response"],
                state=job.get("state"),
                **fields,
            )
        else:
            tok = s.fetch_token(job["token_url"], grant_type=grant, **fields)
        return dict(seen, ok=True, token=dict(tok))
    except OAuthError as e:
        return dict(seen, ok=False, error=e.error, description=e.description)
    except Exception as e:  # noqa: BLE001 - a non-JSON answer: the raw answer is the result
        return dict(seen, ok=False, exception=repr(e))


def revoke(job):
    s = session(job)
    resp = s.revoke_token(
        job["revoke_url"],
        token=job["token"],
        token_type_hint=job.get("token_type_hint"),
        timeout=TIMEOUT,
    )
    return raw(resp)


def call(job):
    s = OAuth2Session(
        client_id=job.get("client_id"),
        token={"access_token": job["access_token"], "token_type": "Bearer"},
    )
    s.trust_env = False
    return raw(s.get(job["url"], timeout=TIMEOUT))


def metadata(job):
    s = requests.Session()
    s.trust_env = False
    out = raw(s.get(job["url"], timeout=TIMEOUT))
    try:
        AuthorizationServerMetadata(out["body"]).validate()
        out["valid"] = True
    except Exception as e:  # noqa: BLE001 - the reason is the result
        out["valid"] = False
        out["invalid_because"] = repr(e)
    return out


OPS = {
    "authorize": authorize,
    "token": token,
    "revoke": revoke,
    "call": call,
    "metadata": metadata,
}


def main():
    job = json.load(sys.stdin)
    try:
        result = OPS[job["op"]](job)
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails with it
        result = {
            "ok": False,
            "exception": repr(e),
            "traceback": traceback.format_exc(),
        }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
