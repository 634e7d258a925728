"""A second OAuth 2.0 client for end-to-end tests, built on requests-oauthlib
(`requests_oauthlib.OAuth2Session` over oauthlib), independent of both the gateway and Authlib
(`oauth_client.py`): other request building, other client authentication, other response
parsing.

Reads one JSON job on stdin, prints one JSON result on stdout; it never exits non-zero for an
OAuth failure (the test asserts on the result). Every job has "op" and the client's settings:
client_id, client_secret (HTTP Basic, requests-oauthlib's default), redirect_uri.
Ops (each runs a whole flow in one process, since the PKCE verifier lives in the session):
  authorization_code  authorize_url, token_url, pkce (S256 when true), call_url, refresh_url,
                      call_after_refresh_url. authorization_url(), GET it (expects a 307 to the
                      login portal), GET the portal (expects a 302 to redirect_uri),
                      fetch_token(authorization_response=...) (state and PKCE verifier checked
                      and sent by the library), then a bearer GET of call_url; with refresh_url,
                      refresh_token() there and a bearer GET of call_after_refresh_url with the
                      new token.
  client_credentials  token_url, call_url. BackendApplicationClient, fetch_token(), then a
                      bearer GET of call_url.
Result: "steps" reached, "authorize" and "portal" (raw answers), "token" and "refresh" (the raw
answer of the token endpoint with "ok" and the parsed "token", or "error"/"description"/
"exception"), "call" and "call_after_refresh" (raw answers). A raw answer is status, headers
(lower-case names), body (JSON when it parses).
"""
import json
import os
import sys
import traceback

# The test edges speak plain HTTP on loopback; oauthlib refuses http:// without this.
os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"

import requests  # noqa: E402
from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error  # noqa: E402
from requests_oauthlib import OAuth2Session  # noqa: E402

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


def recorder(s, kind):
    seen = {}

    def record(resp):
        seen.clear()
        seen.update(raw(resp))
        return resp

    s.register_compliance_hook(kind, record)
    return seen


def token_step(seen, fetch):
    """Runs `fetch` (a requests-oauthlib token call): the raw answer plus the outcome."""
    try:
        tok = fetch()
        return dict(seen, ok=True, token=dict(tok))
    except OAuth2Error as e:
        return dict(seen, ok=False, error=e.error, description=e.description)
    except Exception as e:  # noqa: BLE001 - a non-JSON answer: the raw answer is the result
        return dict(seen, ok=False, exception=repr(e))


def new_session(job, **kwargs):
    s = OAuth2Session(**kwargs)
    # Loopback only: a proxy from the environment must not see (or break) the flows.
    s.trust_env = False
    return s


def authorization_code(job, out):
    s = new_session(
        job,
        client_id=job["client_id"],
        redirect_uri=job["redirect_uri"],
        pkce="S256" if job.get("pkce") else None,
    )
    seen = recorder(s, "access_token_response")
    url, state = s.authorization_url(job["authorize_url"])
    out["state"] = state
    first = s.get(url, allow_redirects=False, timeout=TIMEOUT, withhold_token=True)
    out["authorize"] = raw(first)
    if first.status_code != 307:
        return
    out["steps"].append("authorize")
    portal = requests.Session()
    portal.trust_env = False
    second = portal.get(first.headers["Location"], allow_redirects=False, timeout=TIMEOUT)
    out["portal"] = raw(second)
    if second.status_code != 302:
        return
    out["steps"].append("portal")
    redirect = second.headers["Location"]
    out["redirect"] = redirect
    out["token"] = token_step(
        seen,
        lambda: s.fetch_token(
            job["token_url"],
            authorization_response=redirect,
            client_secret=job.get("client_secret"),
            timeout=TIMEOUT,
        ),
    )
    if not out["token"]["ok"]:
        return
    out["steps"].append("token")
    if job.get("call_url"):
        out["call"] = raw(s.get(job["call_url"], timeout=TIMEOUT))
        out["steps"].append("call")
    if job.get("refresh_url"):
        seen = recorder(s, "refresh_token_response")
        out["refresh"] = token_step(
            seen,
            lambda: s.refresh_token(
                job["refresh_url"],
                auth=requests.auth.HTTPBasicAuth(job["client_id"], job["client_secret"]),
                timeout=TIMEOUT,
            ),
        )
        if not out["refresh"]["ok"]:
            return
        out["steps"].append("refresh")
        if job.get("call_after_refresh_url"):
            out["call_after_refresh"] = raw(s.get(job["call_after_refresh_url"], timeout=TIMEOUT))
            out["steps"].append("call_after_refresh")


def client_credentials(job, out):
    s = new_session(job, client=BackendApplicationClient(client_id=job["client_id"]))
    seen = recorder(s, "access_token_response")
    out["token"] = token_step(
        seen,
        lambda: s.fetch_token(
            job["token_url"], client_secret=job.get("client_secret"), timeout=TIMEOUT
        ),
    )
    if not out["token"]["ok"]:
        return
    out["steps"].append("token")
    if job.get("call_url"):
        out["call"] = raw(s.get(job["call_url"], timeout=TIMEOUT))
        out["steps"].append("call")


OPS = {
    "authorization_code": authorization_code,
    "client_credentials": client_credentials,
}


def main():
    job = json.load(sys.stdin)
    out = {"steps": []}
    try:
        OPS[job["op"]](job, out)
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails with it
        out["exception"] = repr(e)
        out["traceback"] = traceback.format_exc()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
