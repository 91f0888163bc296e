#!/usr/bin/python3
"""A wanas client in Python: calls wanas.v1.AggregationService/Aggregate on any broker.

Uses Debian's python3-grpcio and python3-protobuf (run it with /usr/bin/python3). The stubs are
generated from proto/wanas/v1/*.proto on first use with protoc (Debian's protobuf-compiler, with the
well-known types from libprotobuf-dev) and grpc_python_plugin (protobuf-compiler-grpc) into ./gen, so nothing is committed but this file.

  /usr/bin/python3 examples/clients/python/client.py --address 127.0.0.1:7111 \
      --op sessions.find --param user=alice [--timeout 2.5] [--scope-site eu-west] [--json]
  /usr/bin/python3 examples/clients/python/client.py --address 127.0.0.1:7111 \
      --op desktops.provision --param user=zoe --param pool=gpu --first --prefer-site eu-west
  ... --op echo --min-ok 5 --require-site us-east
  ... --op sessions.find --param user=alice --explain   (the plan the broker would run; nothing is sent)
  ... --op sessions.list --page-size 1000 [--page-token T]   (one page of a listing, and the next token)
  ... --op sessions.list --page-size 1000 --all-pages [--stream]   (every page: one item a line)

A call that fails because a required site failed carries the partial answer as a google.rpc.Status
detail (trailer grpc-status-details-bin); it is printed after the error.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "..", "proto"))
GEN = os.path.join(HERE, "gen")
PROTOS = ["wanas/v1/common.proto", "wanas/v1/aggregation.proto", "wanas/v1/admin.proto", "google/rpc/status.proto"]
# google/protobuf/*.proto (well-known types) from Debian's libprotobuf-dev.
WKT_DIR = "/usr/include"


def generate_stubs():
    """Runs protoc once; regenerates when a .proto is newer than the stubs."""
    marker = os.path.join(GEN, "wanas", "v1", "admin_pb2_grpc.py")
    newest = max(os.path.getmtime(os.path.join(PROTO_DIR, p)) for p in PROTOS)
    if os.path.exists(marker) and os.path.getmtime(marker) >= newest:
        return
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    os.makedirs(GEN, exist_ok=True)
    subprocess.run(
        ["protoc", f"-I{PROTO_DIR}", f"-I{WKT_DIR}", f"--python_out={GEN}", f"--grpc_python_out={GEN}",
         f"--plugin=protoc-gen-grpc_python={plugin}", *PROTOS],
        check=True,
    )
    for d in ("wanas", os.path.join("wanas", "v1")):
        open(os.path.join(GEN, d, "__init__.py"), "a").close()


def parse_param(text):
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f'"{text}" is not key=value')
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def partial_response(error, aggregation_pb2):
    """The AggregateResponse carried in a failed call's google.rpc.Status details, or None."""
    import importlib.util

    # Loaded from its file: a gen/google package would hide the system's google.protobuf.
    spec = importlib.util.spec_from_file_location("wanas_rpc_status_pb2", os.path.join(GEN, "google", "rpc", "status_pb2.py"))
    status_pb2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(status_pb2)

    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            res = aggregation_pb2.AggregateResponse()
            if detail.Unpack(res):
                return res
    return None


def explain(grpc, json_format, admin_pb2, admin_pb2_grpc, args, req):
    """Prints the plan the broker would run for `req` (AdminService.Explain): one line per leg, or JSON."""
    with grpc.insecure_channel(args.address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            plan = stub.Explain(admin_pb2.ExplainRequest(request=req), timeout=3)
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    if args.json:
        print(json_format.MessageToJson(plan))
        return 0
    print(f"{plan.operation} planned by {plan.planned_by}: mode {plan.mode}, {len(plan.pods)} pod(s) in scope")
    for i, leg in enumerate(plan.legs, 1):
        brokers = " ".join(f"{e.broker_id}({e.state})" for e in leg.endpoints) or "(in-process)"
        note = f"  SKIPPED: {leg.skipped}" if leg.skipped else ""
        print(f"{i:3} {leg.via:6} {','.join(leg.pods):24} {leg.method:18} {brokers}{note}")
    return 0


def main():
    ap = argparse.ArgumentParser(description="Aggregate across a wanas federation")
    ap.add_argument("--address", required=True, help="a broker, host:port")
    ap.add_argument("--op", required=True, help="operation, e.g. sessions.find")
    ap.add_argument("--param", action="append", type=parse_param, default=[], help="key=value (JSON values allowed)")
    ap.add_argument("--scope-site", action="append", default=[])
    ap.add_argument("--scope-pod", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=5.0, help="overall budget, seconds")
    ap.add_argument("--idempotency-key", default="")
    ap.add_argument("--first", action="store_true", help="MODE_FIRST: stop at the first pod that answers OK")
    ap.add_argument("--prefer-site", action="append", default=[], help="with --first: try first (in order)")
    ap.add_argument("--min-ok", type=int, default=0, help="answer once this many pods are OK")
    ap.add_argument("--require-site", action="append", default=[], help="fail if a pod of this site fails")
    ap.add_argument("--json", action="store_true", help="print the response as proto3 JSON")
    ap.add_argument("--explain", action="store_true", help="print the plan (AdminService.Explain); nothing is sent")
    ap.add_argument("--page-size", type=int, default=0, help="a listing: items a page (sessions.list)")
    ap.add_argument("--page-token", default="", help="a listing: go on from this next_page_token")
    ap.add_argument("--all-pages", action="store_true", help="a listing: follow next_page_token to the end")
    ap.add_argument("--stream", action="store_true", help="with --all-pages: StreamAggregate sends the pages")
    args = ap.parse_args()

    generate_stubs()
    sys.path.insert(0, GEN)
    import grpc
    from google.protobuf import json_format
    from wanas.v1 import admin_pb2, admin_pb2_grpc, aggregation_pb2, aggregation_pb2_grpc, common_pb2

    req = aggregation_pb2.AggregateRequest(
        operation=args.op,
        idempotency_key=args.idempotency_key,
        mode=aggregation_pb2.MODE_FIRST if args.first else aggregation_pb2.MODE_ALL,
        prefer_sites=args.prefer_site,
        min_ok=args.min_ok,
        required_sites=args.require_site,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    req.params.update(dict(args.param))
    req.timeout.FromMilliseconds(int(args.timeout * 1000))
    req.scope.CopyFrom(common_pb2.Scope(sites=args.scope_site, pods=args.scope_pod))

    if args.explain:
        return explain(grpc, json_format, admin_pb2, admin_pb2_grpc, args, req)
    if args.all_pages:
        return all_pages(grpc, json_format, aggregation_pb2, aggregation_pb2_grpc, args, req)
    with grpc.insecure_channel(args.address) as channel:
        stub = aggregation_pb2_grpc.AggregationServiceStub(channel)
        try:
            res = stub.Aggregate(req, timeout=args.timeout + 2)
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            partial = partial_response(e, aggregation_pb2)
            if partial is not None:
                print(json_format.MessageToJson(partial) if args.json else f"partial answer: {len(partial.pods)} pods")
            return 1
    if args.json:
        print(json_format.MessageToJson(res))
        return 0
    for p in res.pods:
        code = "OK" if p.code == 0 else f"code {p.code}: {p.message}"
        result = json.dumps(json_format.MessageToDict(p.result))[:60] if p.code == 0 else ""
        print(f"{p.site:10} {p.pod:8} {code:6} {p.answered_by:10} {result}")
    s = res.summary
    print(f"pods asked {s.pods_asked}, ok {s.pods_ok}, failed {s.pods_failed}; correlation id {res.correlation_id}")
    if res.next_page_token or args.page_size:
        print(f"page: {int(res.reduced['count'])} item(s); next_page_token: {res.next_page_token or '(end)'}")
    return 0


def page_items(json_format, page):
    """The items of a listing's page (its reduced holds one list, e.g. sessions)."""
    reduced = json_format.MessageToDict(page.reduced)
    return next((v for v in reduced.values() if isinstance(v, list)), [])


def all_pages(grpc, json_format, aggregation_pb2, aggregation_pb2_grpc, args, req):
    """Every page of a listing, following next_page_token (or streamed): one item a line, as JSON."""
    pages = items = 0
    with grpc.insecure_channel(args.address) as channel:
        stub = aggregation_pb2_grpc.AggregationServiceStub(channel)
        try:
            if args.stream:
                stream = stub.StreamAggregate(aggregation_pb2.StreamAggregateRequest(request=req), timeout=600)
                listed = (m.page for m in stream if m.WhichOneof("event") == "page")
            else:
                listed = follow(stub, req, args.timeout + 2)
            for page in listed:
                pages += 1
                for item in page_items(json_format, page):
                    items += 1
                    print(json.dumps(item, sort_keys=True))
        except grpc.RpcError as e:
            print(f"error after {pages} page(s): {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    print(f"listed {items} item(s) in {pages} page(s)", file=sys.stderr)
    return 0


def follow(stub, req, timeout):
    """Aggregate page after page until next_page_token is empty."""
    while True:
        page = stub.Aggregate(req, timeout=timeout)
        yield page
        if not page.next_page_token:
            return
        req.page_token = page.next_page_token


if __name__ == "__main__":
    sys.exit(main())
