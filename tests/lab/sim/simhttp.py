# SPDX-License-Identifier: MPL-2.0
"""HTTP plumbing of the simulator: one ThreadingHTTPServer per service, restify-like routing and
error bodies, HTTP/1.1 keep-alive, x-request-id, the request log and fault injection."""

import collections
import http.server
import json
import re
import socket
import socketserver
import threading
import time
import urllib.parse
import uuid as uuidlib

from model import ApiError, log, now_iso

SERVICES = ("vmapi", "cnapi", "napi", "imgapi")
FAULT_MODES = ("500", "503", "slow", "malformed", "drop")


class Request:
    def __init__(self, service, method, target, headers, raw_body, req_id):
        self.service = service
        self.method = method
        self.target = target
        parts = urllib.parse.urlsplit(target)
        self.path = urllib.parse.unquote(parts.path)
        self.query_string = parts.query
        self.query = {}
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            self.query[k] = v
        self.headers = headers
        self.raw_body = raw_body
        self.req_id = req_id
        self.params = {}
        self._body = None
        self._parsed = False
        self.note = None

    def body(self):
        """The JSON body ({} when empty); ApiError 400 InvalidContent when it does not parse."""
        if not self._parsed:
            self._parsed = True
            if not self.raw_body.strip():
                self._body = {}
            else:
                ctype = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
                if ctype == "application/x-www-form-urlencoded":
                    self._body = dict(urllib.parse.parse_qsl(self.raw_body.decode("utf-8",
                                                                                  "replace")))
                else:
                    try:
                        self._body = json.loads(self.raw_body.decode("utf-8"))
                    except (ValueError, UnicodeDecodeError) as e:
                        raise ApiError(400, "InvalidContent", "Invalid JSON: %s" % e)
        return self._body

    def params_merged(self):
        """restify mapParams: query string and body object merged (body wins)."""
        out = dict(self.query)
        body = self.body()
        if isinstance(body, dict):
            out.update(body)
        return out


class Response:
    def __init__(self, status=200, body=None, headers=None, file=None):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.file = file  # (path, size) streamed instead of a JSON body


class Router:
    def __init__(self):
        self.routes = []

    def add(self, method, pattern, fn):
        rx = "^" + re.sub(r":(\w+)", r"(?P<\1>[^/]+)", pattern) + "/?$"
        self.routes.append((method, re.compile(rx), fn))

    def resolve(self, method, path):
        allowed = []
        for m, rx, fn in self.routes:
            mt = rx.match(path)
            if not mt:
                continue
            if m == method or (method == "HEAD" and m == "GET"):
                return fn, {k: urllib.parse.unquote(v) for k, v in mt.groupdict().items()}
            allowed.append(m)
        if allowed:
            allow = sorted(set(allowed + (["HEAD"] if "GET" in allowed else [])))
            raise ApiError(405, "BadMethod", "%s is not allowed" % method,
                           headers={"Allow": ", ".join(allow)})
        raise ApiError(404, "ResourceNotFound", "Route does not exist")


class Faults:
    """Injected faults, consumed in creation order by the requests they match."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []
        self.next_id = 1

    def add(self, spec):
        if not isinstance(spec, dict):
            raise ApiError(409, "InvalidArgument", "fault must be an object")
        service = spec.get("service", "*")
        if service not in SERVICES + ("*",):
            raise ApiError(409, "InvalidArgument",
                           "service must be one of %s or *" % ", ".join(SERVICES))
        mode = str(spec.get("mode", ""))
        if mode not in FAULT_MODES:
            raise ApiError(409, "InvalidArgument", "mode must be one of %s"
                           % ", ".join(FAULT_MODES))
        count = spec.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or (count < 1 and count != -1):
            raise ApiError(409, "InvalidArgument", "count must be a positive integer or -1")
        delay = spec.get("delay_ms", 2000 if mode == "slow" else 0)
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
            raise ApiError(409, "InvalidArgument", "delay_ms must be a number >= 0")
        path_regex = spec.get("path_regex")
        if path_regex is not None:
            try:
                re.compile(path_regex)
            except (re.error, TypeError) as e:
                raise ApiError(409, "InvalidArgument", "path_regex: %s" % e)
        method = spec.get("method")
        if method is not None and not isinstance(method, str):
            raise ApiError(409, "InvalidArgument", "method must be a string")
        with self.lock:
            fault = {
                "id": "f%d" % self.next_id, "service": service,
                "method": method.upper() if method else None, "path_regex": path_regex,
                "mode": mode, "count": count, "remaining": count, "delay_ms": delay,
                "after": bool(spec.get("after", False)), "hits": 0, "created": now_iso(),
            }
            self.next_id += 1
            self.items.append(fault)
            return dict(fault)

    def take(self, service, method, target):
        with self.lock:
            for f in self.items:
                if f["remaining"] == 0:
                    continue
                if f["service"] not in ("*", service):
                    continue
                if f["method"] and f["method"] != method:
                    continue
                if f["path_regex"] and not re.search(f["path_regex"], target):
                    continue
                f["hits"] += 1
                if f["remaining"] > 0:
                    f["remaining"] -= 1
                return dict(f)
        return None

    def list(self):
        with self.lock:
            return [dict(f, active=f["remaining"] != 0) for f in self.items]

    def clear(self, fid=None):
        with self.lock:
            before = len(self.items)
            self.items = [f for f in self.items if fid is not None and f["id"] != fid]
            return before - len(self.items)


class RequestLog:
    def __init__(self, path, keep=20000):
        self.path = path
        self.lock = threading.Lock()
        self.recent = collections.deque(maxlen=keep)
        self.seq = 0

    def add(self, entry, remember=True):
        with self.lock:
            self.seq += 1
            entry = dict(entry, seq=self.seq)
            if remember:
                self.recent.append(entry)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")

    def query(self, q):
        with self.lock:
            items = list(self.recent)
        out = []
        rx = re.compile(q["path_regex"]) if q.get("path_regex") else None
        since = int(q.get("since_seq") or 0)
        for e in items:
            if e["seq"] <= since:
                continue
            if q.get("service") and e["service"] != q["service"]:
                continue
            if q.get("method") and e["method"] != q["method"].upper():
                continue
            if rx and not rx.search(e["path"]):
                continue
            out.append(e)
        if q.get("limit"):
            out = out[-int(q["limit"]):]
        return out

    def clear(self):
        with self.lock:
            self.recent.clear()


class App:
    """What every service's handler shares: state, faults, request log, lab routes."""

    def __init__(self, state, faults, reqlog):
        self.state = state
        self.faults = faults
        self.reqlog = reqlog


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections give their thread back after this

    # set per service by make_server
    service = None
    server_name = None
    router = None
    lab_router = None
    app = None

    def setup(self):
        # Headers and body are two writes: without TCP_NODELAY, Nagle holds the body until the
        # client's delayed ACK (40 ms per keep-alive request). Node's http (restify) sets it too.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def version_string(self):
        return self.server_name

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self._handle()

    def send_error(self, code, message=None, explain=None):
        """Errors raised by the HTTP parser itself (bad request line, unknown method, header too
        long) as restify JSON bodies instead of the base class's HTML."""
        if code == 501:  # no do_<METHOD>: restify answers an unknown method with BadMethod
            code = 405
            body = {"code": "BadMethod", "message": "%s is not allowed" % self.command}
        else:
            names = {400: "BadRequest", 408: "RequestTimeout", 414: "UriTooLong",
                     431: "RequestHeaderFieldsTooLarge", 505: "HttpVersionNotSupported"}
            body = {"code": names.get(code, "InternalError"),
                    "message": message or self.responses.get(code, ("",))[0]}
        data = json.dumps(body).encode("utf-8")
        self.close_connection = True
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(data)
        except OSError:
            pass

    do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    # ------------------------------------------------------------------ body

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ApiError(400, "InvalidContent", "truncated chunked body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:
                        trailer = self.rfile.readline(65537)
                        if trailer in (b"\r\n", b"\n", b""):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length:
            n = int(length)
            if n < 0:
                raise ValueError("negative content-length")
            return self.rfile.read(n)
        return b""

    # ------------------------------------------------------------------ main

    def _handle(self):
        t0 = time.monotonic()
        method = self.command.upper()
        req_id = (self.headers.get("x-request-id") or self.headers.get("request-id")
                  or str(uuidlib.uuid4()))
        entry = {"time": now_iso(), "service": self.service, "method": method,
                 "path": self.path, "x-request-id": req_id,
                 "remote": self.client_address[0] if self.client_address else None}
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._pending = (entry, t0, True)
            self._send_json(400, {"code": "InvalidContent", "message": "unreadable body"},
                            req_id, method, t0)
            return
        req = Request(self.service, method, self.path, self.headers, raw, req_id)
        is_lab = req.path.startswith("/_lab/") or req.path == "/_lab"
        # The log line is written when the answer's head goes out, so a client that reads the
        # log right after an answer finds it there.
        self._pending = (entry, t0, not is_lab)
        fault = None
        if not is_lab:
            fault = self.app.faults.take(self.service, method, self.path)
        if fault:
            entry["fault"] = fault["mode"]
            entry["fault_id"] = fault["id"]
            if not fault["after"]:
                if fault["mode"] == "drop":
                    self._flush_log(0)
                    self._drop()
                    return
                if fault["mode"] in ("500", "503"):
                    self._send_fault_error(fault, req_id, method, t0)
                    return
            if fault["mode"] == "slow":
                time.sleep(fault["delay_ms"] / 1000.0)
        resp = self._dispatch(req, is_lab)
        if req.note:
            entry["note"] = req.note
        if fault and fault["after"]:
            if fault["mode"] == "drop":
                self._flush_log(0)
                self._drop()
                return
            if fault["mode"] in ("500", "503"):
                self._send_fault_error(fault, req_id, method, t0)
                return
        if fault and fault["mode"] == "malformed":
            self._send_malformed(resp, req_id, method, t0)
        elif resp.file is not None:
            self._send_file(resp, req_id, method, t0)
        else:
            self._send_json(resp.status, resp.body, req_id, method, t0, resp.headers)
        self._flush_log(0)

    def _dispatch(self, req, is_lab):
        try:
            router = self.lab_router if is_lab else self.router
            fn, params = router.resolve(req.method, req.path)
            req.params = params
            resp = fn(self.app, req)
            if not isinstance(resp, Response):
                resp = Response(200, resp)
            return resp
        except ApiError as e:
            return Response(e.status, e.body(), e.headers)
        except Exception as e:  # a simulator bug: answer like restify does, keep serving
            log("internal error on %s %s: %r" % (req.method, req.target, e))
            import traceback
            traceback.print_exc()
            return Response(500, {"code": "InternalError", "message": "%s" % e})

    def _flush_log(self, status):
        pending, self._pending = getattr(self, "_pending", None), None
        if pending:
            entry, t0, remember = pending
            self._log(entry, status, t0, remember)

    def _log(self, entry, status, t0, remember=True):
        entry["status"] = status
        entry["duration_ms"] = round((time.monotonic() - t0) * 1000, 1)
        try:
            self.app.reqlog.add(entry, remember)
        except OSError as e:
            log("cannot write the request log: %s" % e)

    # ------------------------------------------------------------------ senders

    def _head(self, status, req_id, t0, ctype, length, extra=None):
        self._flush_log(status)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("x-request-id", req_id)
        self.send_header("x-response-time", str(int((time.monotonic() - t0) * 1000)))
        self.send_header("x-server-name", "zmigrate-lab-sim")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Connection", "close" if self.close_connection else "keep-alive")
        self.end_headers()

    def _send_json(self, status, body, req_id, method, t0, headers=None):
        data = b"" if body is None and status == 204 else json.dumps(body).encode("utf-8")
        self._head(status, req_id, t0, "application/json", len(data), headers)
        if method != "HEAD" and data:
            self.wfile.write(data)
        self.wfile.flush()

    def _send_fault_error(self, fault, req_id, method, t0):
        if fault["mode"] == "500":
            body = {"code": "InternalError", "message": "injected fault %s" % fault["id"]}
        else:
            body = {"code": "ServiceUnavailable", "message": "injected fault %s" % fault["id"]}
        self._send_json(int(fault["mode"]), body, req_id, method, t0)

    def _send_malformed(self, resp, req_id, method, t0):
        if resp.file is not None:
            # A truncated download: announce the whole size, send half, close.
            path, size = resp.file[0], resp.file[1]
            self.close_connection = True
            self._head(200, req_id, t0, "application/octet-stream", size, resp.headers)
            if method != "HEAD":
                with open(path, "rb") as f:
                    self._copy(f, size // 2)
            self.wfile.flush()
            self._drop()
            return 200
        full = json.dumps(resp.body).encode("utf-8")
        data = full[:len(full) // 2]
        try:
            json.loads(data.decode("utf-8", "replace"))
            data = b'{"malformed'
        except ValueError:
            pass
        self._head(200, req_id, t0, "application/json", len(data))
        if method != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()
        return 200

    def _send_file(self, resp, req_id, method, t0):
        path, size = resp.file[0], resp.file[1]
        try:
            f = open(path, "rb")
        except OSError:
            self._send_json(404, {"code": "ResourceNotFound", "message": "image file not found"},
                            req_id, method, t0)
            return 404
        with f:
            self._head(200, req_id, t0, "application/octet-stream", size, resp.headers)
            if method != "HEAD":
                sent = self._copy(f, size)
                if sent < size:  # the file shrank under us: the client must see a short body
                    self.close_connection = True
        self.wfile.flush()
        return 200

    def _copy(self, f, size):
        sent = 0
        while sent < size:
            chunk = f.read(min(1 << 16, size - sent))
            if not chunk:
                break
            self.wfile.write(chunk)
            sent += len(chunk)
        return sent

    def _drop(self):
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64


def make_server(addr, port, service, server_name, router, lab_router, app):
    cls = type("Handler_" + service, (Handler,), {
        "service": service, "server_name": server_name, "router": router,
        "lab_router": lab_router, "app": app})
    return Server((addr, port), cls)


socketserver.TCPServer.allow_reuse_address = True
