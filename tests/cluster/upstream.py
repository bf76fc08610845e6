#!/usr/bin/env python3
"""A test pod's upstream: answers every HTTP request with the pod name and the path it was asked.

Runs inside a network namespace made by the test harness:
    ip netns exec NS python3 upstream.py --name eureka-0 --port 8080 [--port 9090 ...]
"""
import argparse
import http.server
import socketserver
import threading


def handler_for(name):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes: without TCP_NODELAY the body waits for the
        # proxy's delayed ACK of the headers (40 ms on Linux) on every kept-alive request.
        disable_nagle_algorithm = True

        def _answer(self):
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            body = f"{name} {self.command} {self.path}\n".encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-pod", name)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args):
            pass

    return Handler


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, action="append", required=True)
    args = ap.parse_args()
    servers = [Server(("0.0.0.0", p), handler_for(args.name)) for p in args.port]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("ready", flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
