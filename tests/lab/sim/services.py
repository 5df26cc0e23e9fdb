# SPDX-License-Identifier: MPL-2.0
"""Routes of the four simulated Triton services and of the lab control API (/_lab/)."""

import json

from model import ApiError, is_uuid, napi_invalid, norm_mac, parse_bool, vmapi_validation
from simhttp import SERVICES, Response, Router

SERVER_NAMES = {
    "vmapi": "VMAPI",
    "cnapi": "Compute Node API",
    "napi": "SDC Networking API",
    "imgapi": "imgapi",
}


def ping(app, req):
    return {"ping": "pong"}


def _int_param(q, key, lo, hi, err):
    if q.get(key) in (None, ""):
        return None
    try:
        n = int(q[key])
    except ValueError:
        raise err(key)
    if n < lo or (hi is not None and n > hi):
        raise err(key)
    return n


# ---------------------------------------------------------------------------------- VMAPI

def _vmapi_uuid(value, field="uuid"):
    if not is_uuid(value):
        raise vmapi_validation([{"field": field, "code": "Invalid", "message": "Invalid UUID"}])


def vmapi_get_vm(app, req):
    uuid = req.params["uuid"]
    _vmapi_uuid(uuid)
    owner = req.query.get("owner_uuid")
    if owner:
        _vmapi_uuid(owner, "owner_uuid")
    fields = req.query["fields"].split(",") if req.query.get("fields") else None
    if parse_bool(req.query.get("sync"), False):
        waited = app.state.wait_report(uuid)
        req.note = "sync: %s" % ("fresh report" if waited else "no report within the timeout")
    vm = app.state.get_vm(uuid, owner, fields)
    if vm is None:
        raise ApiError(404, "ResourceNotFound", "VM not found")
    return vm


def vmapi_list_vms(app, req):
    q = dict(req.query)

    def bad(field, msg=None):
        return vmapi_validation([{"field": field, "code": "Invalid",
                                  "message": msg or "Invalid parameter"}])

    for key in ("owner_uuid", "server_uuid", "uuid", "image_uuid", "billing_id"):
        if q.get(key) and not is_uuid(q[key]):
            raise vmapi_validation([{"field": key, "code": "Invalid", "message": "Invalid UUID"}])
    if q.get("uuids"):
        for u in q["uuids"].split(","):
            if not is_uuid(u):
                raise vmapi_validation([{"field": "uuids", "code": "Invalid",
                                         "message": "Invalid UUID: %s" % u}])
    _int_param(q, "limit", 1, 1000, lambda k: bad(
        k, "Not a valid number: number must be >= 1 and <= 1000"))
    _int_param(q, "offset", 0, None, lambda k: bad(k, "Not a valid number: number must be >= 0"))
    if q.get("offset") and q.get("marker"):
        raise vmapi_validation([{"field": "offset", "code": "ConflictingParameters",
                                 "message": "offset and marker cannot be used at the same time"}])
    if q.get("marker"):
        try:
            marker = json.loads(q["marker"])
            if not isinstance(marker, dict) or not is_uuid(marker.get("uuid")):
                raise ValueError
        except ValueError:
            raise bad("marker", "Invalid marker: %s. A marker needs to have a uuid property from "
                                "which a strict total order can be established" % q["marker"])
        q["marker_uuid"] = marker["uuid"]
    if q.get("fields"):
        q["fields_list"] = q["fields"].split(",")
    vms, total = app.state.list_vms(q)
    return Response(200, vms, {"x-joyent-resource-count": str(total)})


def vmapi_put_vm(app, req):
    uuid = req.params["uuid"]
    _vmapi_uuid(uuid)
    vm, note = app.state.put_vm(uuid, req.body(), source=req.query.get("source") or "put")
    req.note = note
    return vm


def vmapi_put_vms(app, req):
    server = req.query.get("server_uuid") or (req.body() or {}).get("server_uuid")
    if not is_uuid(server):
        raise vmapi_validation([{"field": "server_uuid", "code": "MissingParameter",
                                 "message": "server_uuid is required"}])
    body = req.body()
    vms = body.get("vms") if isinstance(body, dict) else body
    if isinstance(vms, dict):
        items = list(vms.items())
    elif isinstance(vms, list):
        items = [(v.get("uuid"), v) for v in vms if isinstance(v, dict)]
    else:
        raise vmapi_validation([{"field": "vms", "code": "Invalid",
                                 "message": "vms must be an object or an array"}])
    for u, _ in items:
        _vmapi_uuid(u)
    notes = app.state.put_vms(server, items)
    if notes:
        req.note = "; ".join(notes)
    return Response(200, {})


def vmapi_statuses(app, req):
    uuids = [u for u in (req.query.get("uuids") or "").split(",") if u]
    if not uuids:
        raise vmapi_validation([{"field": "uuids", "code": "MissingParameter",
                                 "message": "uuids is required"}])
    return app.state.statuses(uuids)


# The non-raw view of a migration (VMAPI translateVmMigration): only these fields.
MIGRATION_VIEW = ("automatic", "created_timestamp", "duration_ms", "error", "finished_timestamp",
                  "phase", "started_timestamp", "state", "vm_uuid", "progress_history")


def _migration_view(m, req):
    if req.query.get("format") == "raw":
        return m
    return {k: v for k, v in m.items() if k in MIGRATION_VIEW}


def vmapi_list_migrations(app, req):
    for key in ("owner_uuid", "vm_uuid", "source_server_uuid", "target_server_uuid"):
        if req.query.get(key) and not is_uuid(req.query[key]):
            raise vmapi_validation([{"field": key, "code": "Invalid", "message": "Invalid UUID"}])
    return [_migration_view(m, req) for m in app.state.list_migrations(req.query)]


def _migration_vm(app, req):
    uuid = req.params["uuid"]
    _vmapi_uuid(uuid)
    if app.state.get_vm(uuid) is None:
        raise ApiError(404, "ResourceNotFound", "VM not found")
    return uuid


def vmapi_get_migration(app, req):
    m = app.state.get_migration(_migration_vm(app, req))
    if m is None:
        raise ApiError(404, "ResourceNotFound", "migration not found")
    return _migration_view(m, req)


def vmapi_delete_migration(app, req):
    m = app.state.delete_migration(_migration_vm(app, req))
    if m is None:
        raise ApiError(404, "ResourceNotFound", "migration not found")
    return {}


def vmapi_routes():
    r = Router()
    r.add("GET", "/ping", ping)
    r.add("GET", "/vms", vmapi_list_vms)
    r.add("PUT", "/vms", vmapi_put_vms)
    r.add("GET", "/vms/:uuid", vmapi_get_vm)
    r.add("PUT", "/vms/:uuid", vmapi_put_vm)
    r.add("GET", "/statuses", vmapi_statuses)
    r.add("GET", "/migrations", vmapi_list_migrations)
    r.add("GET", "/migrations/:uuid", vmapi_get_migration)
    r.add("DELETE", "/migrations/:uuid", vmapi_delete_migration)
    return r


# ---------------------------------------------------------------------------------- CNAPI

def _cnapi_invalid(field, msg, status=409):
    return ApiError(status, "InvalidParameters", "Request parameters failed validation",
                    errors=[{"field": field, "code": "Invalid", "message": msg}])


def cnapi_list_servers(app, req):
    q = req.query
    filters = {}
    for key in ("setup", "headnode", "reserved", "reservoir"):
        if q.get(key) not in (None, ""):
            b = parse_bool(q[key].lower())
            if b is None:
                raise _cnapi_invalid(key, "Invalid value")
            filters[key] = b
    limit = _int_param(q, "limit", 1, 1000, lambda k: _cnapi_invalid(
        k, "limit must be in the range 1-1000 (inclusive)", 400))
    offset = _int_param(q, "offset", 0, None, lambda k: _cnapi_invalid(k, "Invalid value"))
    extras = set()
    if q.get("extras"):
        extras = {e.strip() for e in q["extras"].split(",") if e.strip()}
    uuids = None
    if q.get("uuids"):
        uuids = {u.strip() for u in q["uuids"].split(",")}
    out = []
    for uuid in app.state.server_uuids():
        if uuids is not None and uuid not in uuids:
            continue
        srv = app.state.server_view(uuid, extras)
        if q.get("hostname") and srv.get("hostname") != q["hostname"].strip():
            continue
        if any(bool(srv.get(k)) != v for k, v in filters.items()):
            continue
        out.append(srv)
    out = out[(offset or 0):(offset or 0) + (limit or 1000)]
    return out


def cnapi_get_server(app, req):
    uuid = req.params["server_uuid"]
    srv = app.state.server_view(uuid)
    if srv is None:
        raise ApiError(404, "ResourceNotFound", "Server %s not found" % uuid)
    return srv


def cnapi_routes():
    r = Router()
    r.add("GET", "/ping", ping)
    r.add("GET", "/servers", cnapi_list_servers)
    r.add("GET", "/servers/:server_uuid", cnapi_get_server)
    return r


# ---------------------------------------------------------------------------------- NAPI

def _napi_network(app, uuid):
    if not is_uuid(uuid):
        raise napi_invalid([{"field": "uuid", "code": "InvalidParameter",
                             "message": "invalid UUID"}])
    net = app.state.get_network(uuid)
    if net is None:
        raise ApiError(404, "ResourceNotFound", "network not found")
    return net


def napi_list_networks(app, req):
    return app.state.list_networks(req.query)


def napi_get_network(app, req):
    return _napi_network(app, req.params["uuid"])


def napi_list_ips(app, req):
    _napi_network(app, req.params["uuid"])
    return app.state.list_ips(req.params["uuid"])


def napi_get_ip(app, req):
    _napi_network(app, req.params["uuid"])
    return app.state.get_ip(req.params["uuid"], req.params["ip"])


def napi_put_ip(app, req):
    _napi_network(app, req.params["uuid"])
    params = req.params_merged()
    return app.state.put_ip(req.params["uuid"], req.params["ip"], params)


def _napi_mac(value):
    mac = norm_mac(value)
    if mac is None:
        raise napi_invalid([{"field": "mac", "code": "InvalidParameter",
                             "message": "invalid MAC address"}])
    return mac


def napi_list_nics(app, req):
    q = dict(req.query)
    for key in ("belongs_to_uuid", "owner_uuid", "network_uuid", "cn_uuid"):
        if q.get(key):
            for u in q[key].split(","):
                if not is_uuid(u):
                    raise napi_invalid([{"field": key, "code": "InvalidParameter",
                                         "message": "invalid UUID"}])
    nics = app.state.list_nics(q)
    offset = int(q.get("offset") or 0)
    limit = int(q.get("limit") or 1000)
    return nics[offset:offset + limit]


def napi_get_nic(app, req):
    nic = app.state.get_nic(_napi_mac(req.params["mac"]))
    if nic is None:
        raise ApiError(404, "ResourceNotFound", "nic not found")
    return nic


def napi_put_nic(app, req):
    return app.state.put_nic(_napi_mac(req.params["mac"]), req.params_merged())


def napi_routes():
    r = Router()
    r.add("GET", "/ping", ping)
    r.add("GET", "/networks", napi_list_networks)
    r.add("GET", "/networks/:uuid", napi_get_network)
    r.add("GET", "/networks/:uuid/ips", napi_list_ips)
    r.add("GET", "/networks/:uuid/ips/:ip", napi_get_ip)
    r.add("PUT", "/networks/:uuid/ips/:ip", napi_put_ip)
    r.add("GET", "/nics", napi_list_nics)
    r.add("GET", "/nics/:mac", napi_get_nic)
    r.add("PUT", "/nics/:mac", napi_put_nic)
    return r


# ---------------------------------------------------------------------------------- IMGAPI

def _imgapi_uuid(uuid):
    if not is_uuid(uuid):
        raise ApiError(404, "ResourceNotFound", "image %s not found" % uuid)


def imgapi_list_images(app, req):
    return app.state.list_images(req.query)


def imgapi_get_image(app, req):
    uuid = req.params["uuid"]
    _imgapi_uuid(uuid)
    man = app.state.image_view(uuid)
    if man is None:
        raise ApiError(404, "ResourceNotFound", "image %s not found" % uuid)
    return man


def imgapi_get_file(app, req):
    uuid = req.params["uuid"]
    _imgapi_uuid(uuid)
    found, missing = app.state.image_file(uuid)
    if missing == "image":
        raise ApiError(404, "ResourceNotFound", "image %s not found" % uuid)
    if missing == "file":
        raise ApiError(404, "ResourceNotFound", "image %s has no file" % uuid)
    path, size, md5 = found
    return Response(200, None, {"Content-MD5": md5}, file=(path, size))


def imgapi_routes():
    r = Router()
    r.add("GET", "/ping", ping)
    r.add("GET", "/images", imgapi_list_images)
    r.add("GET", "/images/:uuid", imgapi_get_image)
    r.add("GET", "/images/:uuid/file", imgapi_get_file)
    return r


# ---------------------------------------------------------------------------------- /_lab/

def lab_put_migration(app, req):
    return app.state.put_migration(req.body())


def lab_add_fault(app, req):
    return app.faults.add(req.body())


def lab_list_faults(app, req):
    return app.faults.list()


def lab_clear_faults(app, req):
    return {"cleared": app.faults.clear()}


def lab_clear_fault(app, req):
    n = app.faults.clear(req.params["id"])
    if not n:
        raise ApiError(404, "ResourceNotFound", "fault %s not found" % req.params["id"])
    return {"cleared": n}


def lab_requests(app, req):
    return app.reqlog.query(req.query)


def lab_clear_requests(app, req):
    app.reqlog.clear()
    return {}


def lab_ip_history(app, req):
    return app.state.ip_history(req.query)


def lab_reset(app, req):
    body = req.body()
    seed = body.get("seed") if isinstance(body, dict) else None
    try:
        app.state.reset(seed)
    except (OSError, ValueError) as e:
        raise ApiError(409, "InvalidArgument", "cannot load the seed: %s" % e)
    app.faults.clear()
    return {"reset": True, "seed": app.state.seed_path}


def lab_state(app, req):
    return app.state.dump()


def lab_update_server(app, req):
    body = req.body()
    if not isinstance(body, dict):
        raise ApiError(409, "InvalidArgument", "body must be an object")
    srv = app.state.lab_update_server(req.params["uuid"], body)
    if srv is None:
        raise ApiError(404, "ResourceNotFound", "Server %s not found" % req.params["uuid"])
    return srv


def lab_sync_requests(app, req):
    return app.state.sync_requests(req.query.get("server_uuid"))


def lab_routes():
    r = Router()
    r.add("POST", "/_lab/migrations", lab_put_migration)
    r.add("POST", "/_lab/faults", lab_add_fault)
    r.add("GET", "/_lab/faults", lab_list_faults)
    r.add("DELETE", "/_lab/faults", lab_clear_faults)
    r.add("DELETE", "/_lab/faults/:id", lab_clear_fault)
    r.add("GET", "/_lab/requests", lab_requests)
    r.add("DELETE", "/_lab/requests", lab_clear_requests)
    r.add("GET", "/_lab/ip-history", lab_ip_history)
    r.add("POST", "/_lab/reset", lab_reset)
    r.add("GET", "/_lab/state", lab_state)
    r.add("POST", "/_lab/servers/:uuid", lab_update_server)
    r.add("GET", "/_lab/sync-requests", lab_sync_requests)
    return r


ROUTES = {
    "vmapi": vmapi_routes,
    "cnapi": cnapi_routes,
    "napi": napi_routes,
    "imgapi": imgapi_routes,
}
assert tuple(ROUTES) == SERVICES
