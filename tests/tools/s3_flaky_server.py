#!/usr/bin/env python3
"""s3_flaky_server.py - a misbehaving S3 stand-in on loopback, for the S3 backend's retry tests.

It does not check signatures (s3rver does that); it checks what a retry must get right: every
PUT/POST body arrives whole and matches its x-amz-content-sha256 and Content-MD5 headers. It keeps
objects in memory and misbehaves on purpose, per object key:

  ...fail-N-STATUS-CODE...  the first N requests of each method (HEAD, GET, PUT) for the key
                            get STATUS with S3 error CODE
  ...reset-N...             the first N PUTs are cut off after half the body (no answer)
  ...lose-N...              the first N PUTs are stored, then the connection is dropped
  anything else               behaves like S3 (PUT with If-None-Match, GET with Range, HEAD, DELETE)

ListObjectsV2 on the bucket answers an empty page. Prints the port on stdout once listening;
runs until killed or until --lifetime seconds pass (so a crashed test leaves nothing behind).
GET /_stats answers JSON with the request counts and body-check failures.
"""
import base64
import hashlib
import json
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

objects = {}
counts = {}
stats = {"requests": 0, "bad_bodies": 0, "puts": 0}
lock = threading.Lock()


def error_xml(code, message="injected"):
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>'
        % (code, message)
    ).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def key(self):
        path = unquote(urlsplit(self.path).path)
        parts = path.lstrip("/").split("/", 1)
        return parts[1] if len(parts) > 1 else ""

    def nth(self, key):
        """How many requests of this method this key has had, this one included."""
        with lock:
            stats["requests"] += 1
            k = (key, self.command)
            counts[k] = counts.get(k, 0) + 1
            return counts[k]

    def injected(self, key, n):
        m = re.search(r"fail-(\d+)-(\d+)-(\w+)", key)
        # A HEAD answer has no body to carry a 400's code (RequestTimeout comes on uploads).
        if m and n <= int(m.group(1)) and not (self.command == "HEAD" and m.group(2) == "400"):
            self.reply(int(m.group(2)), error_xml(m.group(3)))
            return True
        return False

    def read_body(self):
        length = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(length)

    def body_ok(self, body):
        sha = self.headers.get("x-amz-content-sha256", "")
        md5 = self.headers.get("Content-MD5")
        ok = sha == hashlib.sha256(body).hexdigest()
        if md5 is not None:
            ok = ok and md5 == base64.b64encode(hashlib.md5(body).digest()).decode()
        if not ok:
            with lock:
                stats["bad_bodies"] += 1
        return ok

    def do_GET(self):
        if self.path == "/_stats":
            self.reply(200, json.dumps(stats).encode())
            return
        key = self.key()
        n = self.nth(key)
        if not key:
            self.reply(200, b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
                       b"<IsTruncated>false</IsTruncated></ListBucketResult>")
            return
        if self.injected(key, n):
            return
        data = objects.get(key)
        if data is None:
            self.reply(404, error_xml("NoSuchKey"))
            return
        rng = self.headers.get("Range")
        if rng:
            m = re.match(r"bytes=(\d+)-(\d*)$", rng)
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                self.reply(416, error_xml("InvalidRange"))
                return
            self.reply(206, data[start:end + 1])
            return
        self.reply(200, data)

    def do_HEAD(self):
        key = self.key()
        n = self.nth(key)
        if self.injected(key, n):
            return
        data = objects.get(key)
        if data is None:
            self.reply(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"%s"' % hashlib.md5(data).hexdigest())
        self.end_headers()

    def do_PUT(self):
        key = self.key()
        n = self.nth(key)
        with lock:
            stats["puts"] += 1
        m = re.search(r"reset-(\d+)", key)
        if m and n <= int(m.group(1)):
            length = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(length // 2)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = self.read_body()
        if self.injected(key, n):
            return
        if not self.body_ok(body):
            self.reply(400, error_xml("BadDigest"))
            return
        if key in objects and self.headers.get("If-None-Match") == "*":
            self.reply(412, error_xml("PreconditionFailed"))
            return
        objects[key] = body
        m = re.search(r"lose-(\d+)", key)
        if m and n <= int(m.group(1)):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.reply(200, headers={"ETag": '"%s"' % hashlib.md5(body).hexdigest()})

    def do_DELETE(self):
        key = self.key()
        self.nth(key)
        objects.pop(key, None)
        self.reply(204)


def main():
    lifetime = 600
    if len(sys.argv) == 3 and sys.argv[1] == "--lifetime":
        lifetime = int(sys.argv[2])
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    print(srv.server_address[1], flush=True)
    threading.Timer(lifetime, srv.shutdown).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
