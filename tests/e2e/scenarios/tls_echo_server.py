#!/usr/bin/env python3
"""A TLS echo server (Python's ssl, i.e. OpenSSL: a TLS stack meshlock did not
write) for as many connections as the open-file limit allows: scenario 32's
peer for connections meshlock originates TLS to (DestinationRule SIMPLE),
whose TLS state crosses agent upgrades."""
import argparse
import asyncio
import resource
import ssl


async def echo(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.write_eof() if writer.can_write_eof() else None
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(args.cert, args.key)
    server = await asyncio.start_server(echo, "0.0.0.0", args.port, ssl=context, backlog=4096)
    print(f"listening on {args.port}", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
