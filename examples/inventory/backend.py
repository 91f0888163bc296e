#!/usr/bin/python3
"""The inventory example's gRPC backend: acme.inventory.v1.Inventory, one per pod, in Python.

It stands for the service a team already runs in every cluster. It has no generated code: the message
types come from inventory.binpb (the FileDescriptorSet wanas reads too), so Debian's python3-grpcio and
python3-protobuf are all it needs (run it with /usr/bin/python3).

  /usr/bin/python3 examples/inventory/backend.py --port 19101 --site eu-west --pod dub-a \
      [--delay-ms 0] [--events FILE]

Stock differs per pod (a hash of site and pod). Reserve remembers the idempotency-key header it was sent
and answers a repeated key with the first reservation. --delay-ms makes every call slow (a slow pod);
--events appends one JSON line per call (method, metadata, outcome) for tests.
"""
import argparse
import hashlib
import json
import os
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE = "acme.inventory.v1.Inventory"
SKUS = ["widget", "gadget", "gizmo", "sprocket", "flange"]


def load_types(path):
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    factory = message_factory.MessageFactory(pool)
    return lambda name: factory.GetPrototype(pool.FindMessageTypeByName("acme.inventory.v1." + name))


def stock_of(site, pod):
    """Deterministic stock per pod: {sku: (quantity, price, warehouses)}."""
    out = {}
    for sku in SKUS:
        h = int(hashlib.sha256(f"{site}/{pod}/{sku}".encode()).hexdigest()[:8], 16)
        out[sku] = [h % 1000, round(1 + (h >> 10) % 5000 / 100, 2), 1 + (h >> 3) % 4]
    return out


class Inventory:
    def __init__(self, args, T):
        self.args = args
        self.T = T
        self.stock = stock_of(args.site, args.pod)
        self.reservations = {}
        self.lock = threading.RLock()
        self.events = open(args.events, "a", buffering=1) if args.events else None

    def record(self, method, context, outcome, **more):
        if not self.events:
            return
        md = {k: (v if isinstance(v, str) else v.hex()) for k, v in context.invocation_metadata()}
        line = {"method": method, "site": self.args.site, "pod": self.args.pod, "outcome": outcome,
                "metadata": md, "timeRemaining": context.time_remaining(), **more}
        with self.lock:
            self.events.write(json.dumps(line) + "\n")

    def wait(self, context):
        """--delay-ms, cut short when the caller cancels or its deadline passes (seen as not active)."""
        until = time.monotonic() + self.args.delay_ms / 1000
        while time.monotonic() < until:
            if not context.is_active():
                return False
            time.sleep(0.005)
        return True

    def begin(self, method, context):
        self.record(method, context, "received")
        if self.args.delay_ms and not self.wait(context):
            self.record(method, context, "cancelled")
            context.abort(grpc.StatusCode.CANCELLED, "the caller went away")

    def count(self, req, context):
        self.begin("Count", context)
        if req.sku not in self.stock:
            self.record("Count", context, "not-found")
            context.abort(grpc.StatusCode.NOT_FOUND, f"no sku {req.sku!r} in {self.args.site}/{self.args.pod}")
        qty, price, warehouses = self.stock[req.sku]
        self.record("Count", context, "ok")
        return self.T("CountResponse")(total=qty, warehouses=warehouses, min_price=price)

    def list(self, req, context):
        self.begin("List", context)
        items = []
        for sku, (qty, price, warehouses) in sorted(self.stock.items()):
            if sku.startswith(req.prefix):
                score = (qty % 97) / 97 + len(self.args.pod) / 100
                items.append(self.T("Item")(sku=sku, quantity=qty, score=round(score, 4),
                                             warehouse=f"{self.args.site}/{self.args.pod}/w{warehouses}"))
        items.sort(key=lambda i: -i.score)
        if req.limit:
            items = items[: req.limit]
        self.record("List", context, "ok")
        return self.T("ListResponse")(items=items)

    def reserve(self, req, context):
        self.begin("Reserve", context)
        key = str(dict(context.invocation_metadata()).get("idempotency-key", ""))
        with self.lock:
            if key and key in self.reservations:
                self.record("Reserve", context, "replayed", key=key)
                return self.reservations[key]
            if req.sku not in self.stock:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no sku {req.sku!r}")
            if req.quantity <= 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "quantity: must be at least 1")
            if self.stock[req.sku][0] < req.quantity:
                self.record("Reserve", context, "exhausted", key=key)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"only {self.stock[req.sku][0]} {req.sku} left in {self.args.site}/{self.args.pod}")
            self.stock[req.sku][0] -= req.quantity
            res = self.T("ReserveResponse")(reservation_id=f"{self.args.pod}-{len(self.reservations) + 1}",
                                            remaining=self.stock[req.sku][0])
            if key:
                self.reservations[key] = res
        self.record("Reserve", context, "ok", key=key)
        return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--site", required=True)
    p.add_argument("--pod", required=True)
    p.add_argument("--descriptor-set", default=os.path.join(HERE, "inventory.binpb"))
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--events")
    args = p.parse_args()
    T = load_types(args.descriptor_set)
    inv = Inventory(args, T)

    def unary(fn, req):
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=T(req).FromString, response_serializer=lambda m: m.SerializeToString())

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Count": unary(inv.count, "CountRequest"),
        "List": unary(inv.list, "ListRequest"),
        "Reserve": unary(inv.reserve, "ReserveRequest"),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{args.host}:{args.port}")
    if not bound:
        sys.exit(f"cannot listen on {args.host}:{args.port}")
    server.start()
    print(json.dumps({"msg": "inventory backend serving", "address": f"{args.host}:{bound}",
                      "site": args.site, "pod": args.pod}), flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
