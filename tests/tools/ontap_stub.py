#!/usr/bin/env python3
"""ontap_stub.py - a tiny stand-in for the three ONTAP REST endpoints scripts/snapmirror-update.sh
uses, on plain http on a free loopback port, recording every request for the test to check.

  GET  /api/snapmirror/relationships?destination.path=SVM:VOL  records whose destination matches
  POST /api/snapmirror/relationships/UUID/transfers              202 + {"job": {...}} (or --post-status)
  GET  /api/cluster/jobs/JOB                                     the next of --job-states

Requests without an Authorization header get 401, as on ONTAP. Every request is appended to --log
as one JSON object: method, path, query (decoded), body, authorization, content_type, and
secret_in_argv: whether the secret (read from --secret-file) appeared in the argv or environment
of any other process on this machine while the request was being answered (the client is alive
then, so a password passed on its command line would be seen).

Writes the port to --port-file once listening; exits after --lifetime seconds at the latest.
"""
import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

JOB_UUID = "1cd8a442-86d1-11e0-ae1c-123478563412"


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--secret-file", required=True)
    p.add_argument("--relationship", action="append", default=[], metavar="SVM:VOL=UUID")
    p.add_argument("--post-status", type=int, default=202)
    p.add_argument("--job-states", default="success", help="comma-separated, the last one repeats")
    p.add_argument("--lifetime", type=float, default=300)
    return p.parse_args()


ARGS = parse_args()
with open(ARGS.secret_file, "rb") as f:
    SECRET = f.read().strip()
RELS = [tuple(r.split("=", 1)) for r in ARGS.relationship]
JOB_STATES = ARGS.job_states.split(",")
polls = {"n": 0}
log_lock = threading.Lock()


def secret_visible():
    """True when SECRET is in another process's argv or environment."""
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        for what in ("cmdline", "environ"):
            try:
                with open("/proc/%s/%s" % (pid, what), "rb") as f:
                    if SECRET in f.read():
                        return True
            except OSError:
                pass
    return False


def ontap_error(message, code):
    return {"error": {"message": message, "code": code}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/hal+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        url = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        entry = {
            "method": self.command,
            "path": url.path,
            "query": {k: v[0] for k, v in parse_qs(url.query).items()},
            "body": body,
            "authorization": self.headers.get("Authorization"),
            "content_type": self.headers.get("Content-Type"),
            "secret_in_argv": secret_visible(),
        }
        with log_lock, open(ARGS.log, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if not entry["authorization"]:
            return self.reply(401, ontap_error("not authenticated", "6"))
        parts = url.path.strip("/").split("/")
        if self.command == "GET" and url.path == "/api/snapmirror/relationships":
            dest = entry["query"].get("destination.path")
            recs = [{"uuid": u, "destination": {"path": d}, "state": "snapmirrored"}
                    for d, u in RELS if d == dest]
            return self.reply(200, {"records": recs, "num_records": len(recs)})
        if (self.command == "POST" and len(parts) == 5 and parts[:3] == ["api", "snapmirror", "relationships"]
                and parts[4] == "transfers"):
            if parts[3] not in {u for _, u in RELS}:
                return self.reply(404, ontap_error("entry doesn't exist", "4"))
            if ARGS.post_status >= 400:
                return self.reply(ARGS.post_status, ontap_error("Insufficient privileges: user 'backup' "
                                                                "does not have write access", "6"))
            href = "/api/cluster/jobs/" + JOB_UUID
            return self.reply(ARGS.post_status, {"job": {"uuid": JOB_UUID, "_links": {"self": {"href": href}}}})
        if self.command == "GET" and parts[:3] == ["api", "cluster", "jobs"] and len(parts) == 4:
            if parts[3] != JOB_UUID:
                return self.reply(404, ontap_error("entry doesn't exist", "4"))
            state = JOB_STATES[min(polls["n"], len(JOB_STATES) - 1)]
            polls["n"] += 1
            msg = "Transfer failed: destination volume is offline" if state == "failure" else "Update started"
            return self.reply(200, {"uuid": JOB_UUID, "state": state, "message": msg, "code": 0})
        return self.reply(404, ontap_error("API not found", "3"))

    do_GET = do_POST = do_PATCH = do_DELETE = handle_any


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = ARGS.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, ARGS.port_file)
    threading.Timer(ARGS.lifetime, srv.shutdown).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
