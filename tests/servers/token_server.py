#!/usr/bin/env python3
"""A small Docker-registry token server, for tests only.

Implements the "token" auth flow of the CNCF distribution registry (v2.8):
the registry answers 401 with

    WWW-Authenticate: Bearer realm="http://127.0.0.1:PORT/token",service="...",scope="..."

and the client fetches a JWT here, either with

    GET  /token?service=S&scope=repository:NAME:ACTIONS[&scope=...][&account=U][&offline_token=true]
         (HTTP Basic credentials -> that user's grants; no Authorization -> anonymous grants)

or (OAuth2 flavour)

    POST /token   application/x-www-form-urlencoded
         grant_type=refresh_token&refresh_token=R&service=S&scope=...&client_id=...
         grant_type=password&username=U&password=P&service=S&scope=...&client_id=...

The JWT is RS256-signed by shelling out to `openssl dgst -sha256 -sign KEY`; its header
carries the certificate in `x5c` (verified by the registry against `rootcertbundle`)
and the libtrust key id of the certificate's public key in `kid`.

The token grants the intersection of the requested scopes and the user's grants: a
scope the user lacks rights for is granted with fewer (or no) actions, never refused.

Python 3 standard library only.  Run with --help for the options.
"""

import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Query/form keys whose values never reach the log.
SECRET_KEYS = {"password", "refresh_token", "token", "access_token", "client_secret"}
MAX_BODY = 64 * 1024


class ConfigError(Exception):
    pass


# --------------------------------------------------------------------------- helpers


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(spki_der):
    """The libtrust fingerprint of a public key (what distribution calls a key id):
    base32 of the first 240 bits of sha256(DER SubjectPublicKeyInfo), in groups of 4
    joined by ':'."""
    digest = hashlib.sha256(spki_der).digest()[:30]
    s = base64.b32encode(digest).decode("ascii").rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


def run_openssl(args, data=None):
    try:
        proc = subprocess.run(
            ["openssl", *args],
            input=data,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError("the openssl command was not found")
    if proc.returncode != 0:
        raise ConfigError(
            "openssl %s failed: %s"
            % (args[0], proc.stderr.decode("utf-8", "replace").strip()[:500])
        )
    return proc.stdout


def redact_query(query):
    """The query string with the values of secret keys replaced by ***."""
    if not query:
        return query
    out = []
    for part in query.split("&"):
        key, sep, _value = part.partition("=")
        if urllib.parse.unquote_plus(key).strip().lower() in SECRET_KEYS:
            out.append(key + "=***")
        else:
            out.append(part)
    return "&".join(out)


def log_safe(text, keep_percent=False):
    """One-line, printable rendering of an untrusted string: anything outside
    printable ASCII (and space, and '%' unless keep_percent) is percent-encoded."""
    return "".join(
        c if 0x21 <= ord(c) <= 0x7E and (c != "%" or keep_percent) else "".join("%%%02X" % b for b in c.encode("utf-8"))
        for c in text
    )


# ------------------------------------------------------------------------- scopes


class Scope:
    """A parsed scope: TYPE[(CLASS)]:NAME:ACTIONS.  NAME may itself contain ':'
    (a registry host with a port), so the type ends at the first ':' and the actions
    start after the last one, as distribution parses it."""

    def __init__(self, rtype, rclass, name, actions):
        self.type = rtype
        self.rclass = rclass
        self.name = name
        self.actions = actions

    @classmethod
    def parse(cls, text):
        first = text.find(":")
        last = text.rfind(":")
        if first < 0 or first == last:
            raise ValueError("malformed scope %r" % text)
        rtype, name, actions = text[:first], text[first + 1:last], text[last + 1:]
        rclass = ""
        if rtype.endswith(")") and "(" in rtype:
            rtype, _, rclass = rtype[:-1].partition("(")
        if not rtype or not name:
            raise ValueError("malformed scope %r" % text)
        acts = []
        for a in actions.split(","):
            a = a.strip()
            if a and a not in acts:
                acts.append(a)
        return cls(rtype, rclass, name, acts)


def parse_scopes(values):
    """Scopes from repeated scope parameters, each possibly holding several scopes
    separated by spaces.  Scopes naming the same resource are merged."""
    merged = []
    index = {}
    for value in values:
        for item in value.split():
            sc = Scope.parse(item)
            key = (sc.type, sc.rclass, sc.name)
            if key in index:
                target = index[key]
                for a in sc.actions:
                    if a not in target.actions:
                        target.actions.append(a)
            else:
                index[key] = sc
                merged.append(sc)
    return merged


def grant(requested, grants):
    """Intersect requested scopes with a grants map {repo-or-*: [actions]}.
    Returns the JWT access list (every requested resource appears, possibly with no
    actions).  An action "*" in a grant allows every requested action; a requested
    "*" is only granted by a granted "*"."""
    access = []
    for sc in requested:
        allowed = set()
        if sc.type == "repository":
            for repo in (sc.name, "*"):
                allowed.update(grants.get(repo, ()))
        actions = [a for a in sc.actions if a in allowed or "*" in allowed]
        entry = {"type": sc.type, "name": sc.name, "actions": actions}
        if sc.rclass:
            entry["class"] = sc.rclass
        access.append(entry)
    return access


def access_summary(access):
    parts = []
    for e in access:
        t = e["type"] + ("(%s)" % e["class"] if e.get("class") else "")
        parts.append("%s:%s:%s" % (t, e["name"], ",".join(e["actions"])))
    return " ".join(log_safe(p) for p in parts) if parts else "-"


# ------------------------------------------------------------------------- config


def load_users(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError("cannot read users file %s: %s" % (path, e))
    if not isinstance(doc, dict):
        raise ConfigError("users file: top level must be an object")

    def check_grants(where, grants):
        if grants is None:
            return {}
        if not isinstance(grants, dict):
            raise ConfigError("users file: %s.grants must be an object" % where)
        out = {}
        for repo, actions in grants.items():
            if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
                raise ConfigError(
                    "users file: %s.grants[%r] must be a list of strings" % (where, repo)
                )
            out[repo] = list(actions)
        return out

    users = {}
    raw_users = doc.get("users", {})
    if not isinstance(raw_users, dict):
        raise ConfigError("users file: users must be an object")
    seen_refresh = set()
    for name, u in raw_users.items():
        if not isinstance(u, dict) or not isinstance(u.get("password"), str):
            raise ConfigError("users file: users[%r] needs a string password" % name)
        rt = u.get("refresh_token")
        if rt is not None:
            if not isinstance(rt, str) or not rt:
                raise ConfigError("users file: users[%r].refresh_token must be a non-empty string" % name)
            if rt in seen_refresh:
                raise ConfigError("users file: two users share a refresh_token")
            seen_refresh.add(rt)
        users[name] = {
            "password": u["password"],
            "refresh_token": rt,
            "grants": check_grants("users[%r]" % name, u.get("grants")),
        }
    anon = doc.get("anonymous", {})
    if not isinstance(anon, dict):
        raise ConfigError("users file: anonymous must be an object")
    return users, check_grants("anonymous", anon.get("grants"))


def parse_listen(text):
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError("--listen: expected [HOST]:PORT, got %r" % text)
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ConfigError("--listen: expected HOST:PORT, got %r" % text)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError("--listen: %r is not an IP address (loopback only)" % host)
    if not ip.is_loopback or (ip.version == 6 and ip != ipaddress.ip_address("::1")):
        raise ConfigError("--listen: refusing non-loopback address %s" % host)
    try:
        port = int(port)
    except ValueError:
        raise ConfigError("--listen: bad port %r" % port)
    if not 0 <= port <= 65535:
        raise ConfigError("--listen: bad port %r" % port)
    return ip, port


class Signer:
    def __init__(self, key_path, cert_path):
        self.key_path = key_path
        try:
            with open(cert_path, "r", encoding="ascii") as f:
                pem = f.read()
        except OSError as e:
            raise ConfigError("cannot read certificate %s: %s" % (cert_path, e))
        begin = "-----BEGIN CERTIFICATE-----"
        end = "-----END CERTIFICATE-----"
        chain = []
        rest = pem
        while begin in rest:
            block = rest[rest.index(begin):]
            if end not in block:
                break
            block, rest = block[: block.index(end) + len(end)], block[block.index(end) + len(end):]
            chain.append(base64.b64encode(ssl.PEM_cert_to_DER_cert(block)).decode("ascii"))
        if not chain:
            raise ConfigError("no PEM certificate in %s" % cert_path)
        # x5c: leaf first, then any further certificates of the file (intermediates).
        self.x5c = chain
        spki = run_openssl(["x509", "-in", cert_path, "-noout", "-pubkey"])
        spki_der = run_openssl(["pkey", "-pubin", "-outform", "DER"], spki)
        self.kid = libtrust_key_id(spki_der)
        # Fail at start-up, not on the first request, when key and certificate disagree.
        with tempfile.TemporaryDirectory() as d:
            pub = os.path.join(d, "pub.pem")
            sig = os.path.join(d, "sig")
            with open(pub, "wb") as f:
                f.write(spki)
            with open(sig, "wb") as f:
                f.write(self._sign(b"key-check"))
            try:
                run_openssl(["dgst", "-sha256", "-verify", pub, "-signature", sig], b"key-check")
            except ConfigError:
                raise ConfigError("the key %s does not match the certificate %s" % (key_path, cert_path))

    def _sign(self, data):
        return run_openssl(["dgst", "-sha256", "-sign", self.key_path], data)

    def jwt(self, claims):
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid, "x5c": self.x5c}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        return signing_input + "." + b64url(self._sign(signing_input.encode("ascii")))


# ------------------------------------------------------------------------- server


class HTTPError(Exception):
    def __init__(self, status, code, message, user=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.user = user


class TokenServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr, family, cfg):
        self.address_family = family
        self.cfg = cfg
        self.log_lock = threading.Lock()
        super().__init__(addr, Handler)

    def handle_error(self, request, client_address):
        # Never dump tracebacks (they could quote request data) to stderr.
        exc = sys.exc_info()[1]
        sys.stderr.write("token_server: error handling a request: %s\n" % type(exc).__name__)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "token-server/1"

    # The default logging writes the raw request line (query string included).
    def log_message(self, format, *args):
        pass

    def log_line(self, status, user, access):
        cfg = self.server.cfg
        if not cfg.log:
            return
        path, _, query = self.path.partition("?")
        shown = path + ("?" + redact_query(query) if query else "")
        if user is None:
            who = "-"
        elif user == "":
            who = "(anonymous)"
        else:
            who = log_safe(user)
        line = "%s %s %s user=%s status=%d granted=%s\n" % (
            datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            log_safe(self.command),
            log_safe(shown, keep_percent=True),
            who,
            status,
            access_summary(access) if access is not None else "-",
        )
        with self.server.log_lock:
            with open(cfg.log, "a", encoding="utf-8") as f:
                f.write(line)

    def send_json(self, status, doc, extra_headers=()):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def fail(self, err):
        headers = []
        if err.status == 401:
            headers.append(("WWW-Authenticate", 'Basic realm="%s"' % self.server.cfg.service))
        self.send_json(
            err.status,
            {"errors": [{"code": err.code, "message": err.message}]},
            headers,
        )
        self.log_line(err.status, err.user, None)

    # -- authentication

    def basic_credentials(self):
        header = self.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise HTTPError(401, "UNAUTHORIZED", "only Basic authentication is accepted")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise HTTPError(401, "UNAUTHORIZED", "malformed Basic credentials")
        user, sep, password = decoded.partition(":")
        if not sep:
            raise HTTPError(401, "UNAUTHORIZED", "malformed Basic credentials")
        return user, password

    def check_password(self, user, password):
        u = self.server.cfg.users.get(user)
        # Compare against something even for unknown users, to keep timing flat.
        expected = u["password"] if u else "\0no-such-user\0"
        ok = hmac.compare_digest(expected.encode("utf-8"), password.encode("utf-8"))
        if not (u and ok):
            raise HTTPError(401, "UNAUTHORIZED", "invalid username or password", user=user)
        return u

    def user_for_refresh_token(self, token):
        found = None
        for name, u in self.server.cfg.users.items():
            rt = u["refresh_token"]
            if rt is not None and hmac.compare_digest(rt.encode("utf-8"), token.encode("utf-8")):
                found = name
        if found is None:
            raise HTTPError(401, "UNAUTHORIZED", "invalid refresh token")
        return found

    # -- token issuing

    def issue(self, subject, grants, scope_values):
        cfg = self.server.cfg
        try:
            requested = parse_scopes(scope_values)
        except ValueError as e:
            raise HTTPError(400, "INVALID_SCOPE", str(e), user=subject)
        access = grant(requested, grants)
        now = int(time.time())
        claims = {
            "iss": cfg.issuer,
            "sub": subject,
            "aud": cfg.service,
            "exp": now + cfg.expires_in,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        token = cfg.signer.jwt(claims)
        issued_at = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return token, access, issued_at

    def check_service(self, service, user=None):
        if service != self.server.cfg.service:
            raise HTTPError(
                400, "INVALID_SERVICE",
                "unknown service %r (expected %r)" % (service, self.server.cfg.service),
                user=user,
            )

    def do_GET(self):
        try:
            path, _, query = self.path.partition("?")
            if path != "/token":
                raise HTTPError(404, "NOT_FOUND", "no such endpoint")
            params = urllib.parse.parse_qs(query, keep_blank_values=True)
            creds = self.basic_credentials()
            cfg = self.server.cfg
            if creds is None:
                subject, grants, user = "", cfg.anonymous, None
            else:
                subject = creds[0]
                grants = self.check_password(*creds)["grants"]
                user = cfg.users[subject]
            self.check_service(params.get("service", [None])[-1], subject)
            token, access, issued_at = self.issue(subject, grants, params.get("scope", []))
            doc = {
                "token": token,
                "access_token": token,
                "expires_in": cfg.expires_in,
                "issued_at": issued_at,
            }
            offline = params.get("offline_token", ["false"])[-1].lower() == "true"
            if offline and user is not None and user["refresh_token"]:
                doc["refresh_token"] = user["refresh_token"]
            self.send_json(200, doc)
            self.log_line(200, subject, access)
        except HTTPError as e:
            self.fail(e)

    def do_POST(self):
        try:
            path, _, _query = self.path.partition("?")
            if path != "/token":
                raise HTTPError(404, "NOT_FOUND", "no such endpoint")
            ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise HTTPError(400, "UNSUPPORTED", "expected an application/x-www-form-urlencoded body")
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                raise HTTPError(400, "UNSUPPORTED", "bad Content-Length")
            if length < 0 or length > MAX_BODY:
                raise HTTPError(400, "UNSUPPORTED", "body too large")
            body = self.rfile.read(length).decode("utf-8", "replace")
            form = urllib.parse.parse_qs(body, keep_blank_values=True)

            def one(key):
                return form.get(key, [""])[-1]

            grant_type = one("grant_type")
            cfg = self.server.cfg
            if grant_type == "refresh_token":
                subject = self.user_for_refresh_token(one("refresh_token"))
            elif grant_type == "password":
                subject = one("username")
                self.check_password(subject, one("password"))
            else:
                raise HTTPError(400, "UNSUPPORTED_GRANT_TYPE", "unsupported grant_type %r" % grant_type)
            user = cfg.users[subject]
            self.check_service(one("service"), subject)
            token, access, issued_at = self.issue(subject, user["grants"], form.get("scope", []))
            doc = {
                "access_token": token,
                "expires_in": cfg.expires_in,
                "issued_at": issued_at,
                "scope": " ".join(
                    "%s:%s:%s" % (e["type"], e["name"], ",".join(e["actions"]))
                    for e in access if e["actions"]
                ),
            }
            if user["refresh_token"]:
                doc["refresh_token"] = user["refresh_token"]
            self.send_json(200, doc)
            self.log_line(200, subject, access)
        except HTTPError as e:
            self.fail(e)


# ------------------------------------------------------------------------- main


def write_port_file(path, port):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".port-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(str(port))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def main(argv=None):
    p = argparse.ArgumentParser(description="Docker registry token server (tests only).")
    p.add_argument("--listen", required=True, help="HOST:PORT, loopback only (127.x or [::1]); port 0 picks one")
    p.add_argument("--port-file", help="where to write the actual port once listening")
    p.add_argument("--key", required=True, help="RSA private key (PEM) signing the tokens")
    p.add_argument("--cert", required=True, help="certificate (PEM) of that key, sent in x5c")
    p.add_argument("--issuer", required=True, help="iss claim; the registry's auth.token.issuer")
    p.add_argument("--service", required=True, help="aud claim; the registry's auth.token.service")
    p.add_argument("--users", required=True, help="USERS.json")
    p.add_argument("--log", help="append one line per request to this file")
    p.add_argument("--expires-in", type=int, default=300, help="token lifetime in seconds (default 300)")
    args = p.parse_args(argv)

    try:
        if args.expires_in <= 0:
            raise ConfigError("--expires-in must be positive")
        ip, port = parse_listen(args.listen)
        args.users, args.anonymous = load_users(args.users)
        args.signer = Signer(args.key, args.cert)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        server = TokenServer((str(ip), port), family, args)
    except (ConfigError, OSError) as e:
        sys.stderr.write("token_server: %s\n" % e)
        return 2

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return, so it must run elsewhere.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    actual_port = server.server_address[1]
    if args.port_file:
        write_port_file(args.port_file, actual_port)
    host = "[%s]" % ip if ip.version == 6 else str(ip)
    sys.stdout.write("token_server: listening on %s:%d\n" % (host, actual_port))
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
