#!/usr/bin/env python3
"""s3_abort_put.py PORT BUCKET KEY SEND - a signed (SigV4) PUT of a 100,000-byte object on
loopback that sends only SEND bytes of the body, then hangs up: an upload interrupted like one by
a killed client. Prints the HTTP status line when the whole body was sent. Credentials and region
come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION (as s3_server.sh prints
them). Standard library only."""
import datetime
import hashlib
import hmac
import os
import socket
import sys
import time


def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


port, bucket, key, send = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
secret = os.environ["AWS_SECRET_ACCESS_KEY"]
body = b"x" * 100000
now = datetime.datetime.now(datetime.timezone.utc)
stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
host = f"127.0.0.1:{port}"
headers = {"host": host, "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": stamp}
names = ";".join(sorted(headers))
canonical = "\n".join(["PUT", f"/{bucket}/{key}", ""] +
                      [f"{k}:{headers[k]}" for k in sorted(headers)] +
                      ["", names, "UNSIGNED-PAYLOAD"])
scope = f"{day}/{region}/s3/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                     hashlib.sha256(canonical.encode()).hexdigest()])
k = sign(sign(sign(sign(("AWS4" + secret).encode(), day), region), "s3"), "aws4_request")
signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
auth = (f"AWS4-HMAC-SHA256 Credential={os.environ['AWS_ACCESS_KEY_ID']}/{scope}, "
        f"SignedHeaders={names}, Signature={signature}")
head = f"PUT /{bucket}/{key} HTTP/1.1\r\nHost: {host}\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n"
head += f"x-amz-date: {stamp}\r\nAuthorization: {auth}\r\nContent-Length: {len(body)}\r\n\r\n"
with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as s:
    s.sendall(head.encode() + body[:send])
    if send >= len(body):
        print(s.recv(200).split(b"\r\n")[0].decode())
    else:
        time.sleep(0.3)
