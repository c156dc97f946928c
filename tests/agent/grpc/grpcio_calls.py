#!/usr/bin/python3
"""Unary calls on Debian's python3-grpcio, an independent gRPC implementation,
against meshlock's server (server_test.cpp). Bytes in, bytes out: no
serializers, so no protobuf is involved.

Usage: grpcio_calls.py --port P --roots FILE --name NAME --calls JSON
JSON is a list of {"path": ..., "request_hex": ..., "metadata": [[k, v], ...],
"timeout": seconds}. Prints a JSON list, one {"code", "details",
"response_hex"} per call, in order.
"""
import argparse
import json
import sys

import grpc

args = argparse.ArgumentParser()
args.add_argument("--port", type=int, required=True)
args.add_argument("--roots", required=True, help="PEM file of the CA that signed the server's certificate")
args.add_argument("--name", required=True, help="the name the server's certificate must carry")
args.add_argument("--calls", required=True)
opts = args.parse_args()

with open(opts.roots, "rb") as f:
    credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
results = []
with grpc.secure_channel(f"127.0.0.1:{opts.port}", credentials,
                         options=[("grpc.ssl_target_name_override", opts.name)]) as channel:
    for call in json.loads(opts.calls):
        method = channel.unary_unary(call["path"], request_serializer=None, response_deserializer=None)
        metadata = [tuple(pair) for pair in call.get("metadata", [])]
        try:
            response = method(bytes.fromhex(call.get("request_hex", "")), timeout=call.get("timeout", 10),
                              metadata=metadata or None)
            results.append({"code": "OK", "details": "", "response_hex": response.hex()})
        except grpc.RpcError as error:
            results.append({"code": error.code().name, "details": error.details() or "", "response_hex": ""})
json.dump(results, sys.stdout)
