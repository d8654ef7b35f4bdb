"""A foreign peer: py-libp2p talking to Atmosphere nodes from protocols/*.md.

Usage: peer.py ENTRY_MULTIADDR KIND CAPABILITY_ID

It knows one node (ENTRY, with /p2p/<id>), a capability kind and an id. From
the entry node alone it must:

1. connect (TCP, noise, yamux) and identify it (/ipfs/id/1.0.0);
2. receive the capability's signed route update over gossipsub and verify it
   as route-gossip.md says (ed25519 over "atmosphere/routes/1\\0" || payload,
   origin PeerId derived from the key, RouteUpdate decoded field by field);
3. ask the entry for its table over /atmosphere/sync/1.0.0 and verify it too;
4. ask the entry's DHT (/atmosphere/kad/1.0.0) who provides "kind:" + KIND,
   and dial the provider at the addresses the provider record carries;
5. run a chat on the provider over /atmosphere/intent/1.0.0, then streamed
   over /atmosphere/stream/1.0.0 (reading to a clean end of stream), and
   check three refusals.

Prints one JSON object (what it saw) and exits 0, or prints the step that
failed and exits 1. Nothing here is imported from Atmosphere: the encodings
are written from the specs.
"""

import hashlib
import json
import struct
import sys

import multiaddr
import nacl.exceptions
import nacl.signing
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.kad_dht.pb.kademlia_pb2 import Message as KadMessage
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service.context import background_trio_service

TOPIC = "atmosphere/routes/1"
SIGNING_CONTEXT = b"atmosphere/routes/1\x00"
IDENTIFY = TProtocol("/ipfs/id/1.0.0")
SYNC = TProtocol("/atmosphere/sync/1.0.0")
KAD = TProtocol("/atmosphere/kad/1.0.0")
INTENT = TProtocol("/atmosphere/intent/1.0.0")
STREAM = TProtocol("/atmosphere/stream/1.0.0")
CHAT, EMBEDDINGS = 0, 2
STEP_TIMEOUT = 30


class Failed(Exception):
    pass


# --- bincode 2.0.1, standard configuration (protocols/README.md) -------------


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.at = 0

    def raw(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise Failed(f"message ends early at byte {self.at} (wanted {n} more)")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def u8(self) -> int:
        return self.raw(1)[0]

    def varint(self) -> int:
        tag = self.u8()
        if tag < 251:
            return tag
        width = {251: 2, 252: 4, 253: 8}.get(tag)
        if width is None:
            raise Failed(f"bad varint tag {tag}")
        return int.from_bytes(self.raw(width), "little")

    def bytes(self) -> bytes:
        return self.raw(self.varint())

    def string(self) -> str:
        return self.bytes().decode("utf-8")

    def strings(self) -> list:
        return [self.string() for _ in range(self.varint())]

    def boolean(self) -> bool:
        b = self.u8()
        if b > 1:
            raise Failed(f"bad bool {b}")
        return b == 1

    def f32(self) -> float:
        return struct.unpack("<f", self.raw(4))[0]

    def end(self) -> None:
        if self.at != len(self.data):
            raise Failed(f"{len(self.data) - self.at} trailing bytes")


def varint(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfb" + n.to_bytes(2, "little")
    if n < 1 << 32:
        return b"\xfc" + n.to_bytes(4, "little")
    return b"\xfd" + n.to_bytes(8, "little")


def blob(b: bytes) -> bytes:
    return varint(len(b)) + b


def uvarint(n: int) -> bytes:
    """LEB128, the stream protocol's and libp2p's frame length."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# --- route updates (route-gossip.md) ------------------------------------------


def peer_id_of(public_key: bytes) -> ID:
    """Identity multihash of the protobuf-encoded ed25519 public key."""
    proto = b"\x08\x01\x12\x20" + public_key
    return ID(b"\x00" + bytes([len(proto)]) + proto)


def vector(r: Reader, dim: int) -> None:
    scale = r.f32()
    values = r.bytes()
    if len(values) != dim or not (scale >= 0):
        raise Failed(f"vector of {len(values)} values, scale {scale}")


def verify_signed_update(data: bytes) -> dict:
    r = Reader(data)
    if (v := r.u8()) != 1:
        raise Failed(f"SignedRouteUpdate version {v}")
    public_key, payload, signature = r.bytes(), r.bytes(), r.bytes()
    r.end()
    if len(public_key) != 32 or len(signature) != 64:
        raise Failed("key or signature of the wrong length")
    try:
        nacl.signing.VerifyKey(public_key).verify(SIGNING_CONTEXT + payload, signature)
    except nacl.exceptions.BadSignatureError:
        raise Failed("route update signature does not verify")

    p = Reader(payload)
    version = p.u8()
    if version not in (3, 4, 5, 6):
        raise Failed(f"RouteUpdate version {version}")
    update = {
        "origin": peer_id_of(public_key).to_base58(),
        "version": version,
        "seq": p.varint(),
        "ttl_secs": p.varint(),
        "node_name": p.string(),
        "addrs": p.strings(),
        "dim": p.varint(),
        "capabilities": [],
    }
    body = p.varint()
    if body == 0:
        for _ in range(p.varint()):
            cap = {"id": p.string(), "kind": p.string(), "domain": p.string()}
            cap["topics"] = p.strings()
            cap["description"] = p.string()
            vector(p, update["dim"])
            for _ in range(p.varint()):
                vector(p, update["dim"])
            cap["available"] = p.boolean()
            cap["in_flight"] = p.varint()
            cap["reference"] = p.f32() if p.u8() == 1 else None
            cap["examples"] = p.strings()
            if version >= 5:
                # A tool's input schema, JSON text (tools only).
                cap["input_schema"] = p.string() if p.u8() == 1 else None
            if version >= 6:
                # What its requests may carry; empty: what its kind takes.
                cap["inputs"] = p.strings()
            update["capabilities"].append(cap)
    elif body == 1:
        update["withdraw"] = True
    else:
        raise Failed(f"RouteBody variant {body}")
    if version >= 4 and p.u8() == 1:
        # The origin's membership certificate (closed meshes only).
        update["certificate"] = {"body": p.bytes(), "signature": p.bytes()}
    p.end()
    return update


# --- steps --------------------------------------------------------------------


async def read_to_end(stream) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = await stream.read(65536)
        except StreamEOF:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


async def read_uvarint(stream) -> int:
    shift, n = 0, 0
    while True:
        b = await stream.read(1)
        if not b:
            raise StreamEOF()
        n |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return n
        shift += 7


async def read_exact(stream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = await stream.read(n - len(out))
        if not chunk:
            raise Failed(f"stream ended {n - len(out)} bytes early")
        out += chunk
    return bytes(out)


async def identify(host, peer: ID) -> dict:
    stream = await host.new_stream(peer, [IDENTIFY])
    data = await read_to_end(stream)
    await stream.close()
    # One length-prefixed protobuf message.
    n, at = 0, 0
    shift = 0
    while True:
        b = data[at]
        at += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    msg = Identify()
    msg.ParseFromString(data[at : at + n])
    # The key in identify is a protobuf PublicKey; its PeerId must be the peer's.
    key_proto = msg.public_key
    derived = ID(b"\x00" + bytes([len(key_proto)]) + key_proto)
    if derived != peer:
        raise Failed(f"identify key belongs to {derived}, not {peer}")
    return {
        "agent_version": msg.agent_version,
        "protocol_version": msg.protocol_version,
        "protocols": sorted(msg.protocols),
    }


async def gossip_update(subscription, capability: str) -> dict:
    """Waits for a gossiped update that carries `capability`."""
    while True:
        msg = await subscription.get()
        update = verify_signed_update(msg.data)
        if any(c["id"] == capability for c in update["capabilities"]):
            update["envelope_from"] = ID(msg.from_id).to_base58()
            update["envelope_signed"] = len(msg.signature) > 0
            return update


async def sync_table(host, peer: ID) -> list:
    stream = await host.new_stream(peer, [SYNC])
    await stream.write(b"\x01")
    await stream.close_write()
    r = Reader(await read_to_end(stream))
    if (v := r.u8()) != 1:
        raise Failed(f"SyncResponse version {v}")
    signed = []
    for _ in range(r.varint()):
        # Each entry is a whole SignedRouteUpdate; re-read its fields to
        # find where it ends, then verify it on its own.
        start = r.at
        r.u8()
        r.bytes()
        r.bytes()
        r.bytes()
        signed.append(verify_signed_update(r.data[start : r.at]))
    r.end()
    return signed


async def providers(host, peer: ID, kind: str) -> list:
    digest = hashlib.sha256(("kind:" + kind).encode()).digest()
    ask = KadMessage(type=KadMessage.GET_PROVIDERS, key=b"\x12\x20" + digest)
    stream = await host.new_stream(peer, [KAD])
    body = ask.SerializeToString()
    await stream.write(uvarint(len(body)) + body)
    n = await read_uvarint(stream)
    answer = KadMessage()
    answer.ParseFromString(await read_exact(stream, n))
    await stream.close()
    found = []
    for p in answer.providerPeers:
        addrs = [str(multiaddr.Multiaddr(a)) for a in p.addrs]
        found.append({"peer": ID(p.id).to_base58(), "addrs": addrs})
    return found


def intent_request(capability: str, operation: int, body: bytes, hops: int) -> bytes:
    return (
        b"\x01"
        + blob(capability.encode())
        + varint(operation)
        + blob(body)
        + varint(20_000)
        + bytes([hops])
    )


async def intent(host, peer: ID, request: bytes) -> dict:
    stream = await host.new_stream(peer, [INTENT])
    await stream.write(request)
    await stream.close_write()
    r = Reader(await read_to_end(stream))
    if (v := r.u8()) != 1:
        raise Failed(f"IntentResponse version {v}")
    status = r.varint()
    body = json.loads(r.bytes())
    r.end()
    return {"status": status, "body": body}


async def streamed(host, peer: ID, request: bytes) -> dict:
    stream = await host.new_stream(peer, [STREAM])
    await stream.write(uvarint(len(request)) + request)
    await stream.close_write()
    frames, events, status, failed = 0, [], None, None
    while True:
        n = await read_uvarint(stream)
        r = Reader(await read_exact(stream, n))
        variant = r.varint()
        frames += 1
        if variant == 0:
            status = r.varint()
        elif variant == 1:
            events.append(json.loads(r.bytes()))
        elif variant == 2:
            r.end()
            break
        elif variant == 3:
            failed = {"code": r.string(), "message": r.string()}
            break
        else:
            raise Failed(f"StreamFrame variant {variant}")
        r.end()
    # The receiver half-closes after the last frame: the stream must now end
    # cleanly (EOF), not be reset, and carry nothing more.
    try:
        rest = await read_to_end(stream)
        end = "eof" if not rest else f"{len(rest)} bytes after the last frame"
    except StreamReset:
        end = "reset"
    await stream.close()
    text = "".join(
        (e.get("choices") or [{}])[0].get("delta", {}).get("content") or "" for e in events
    )
    return {"status": status, "frames": frames, "text": text, "failed": failed, "end": end}


async def run(entry: str, kind: str, capability: str) -> dict:
    seen = {}
    step = "start"
    key_pair = create_new_key_pair()
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host = new_host(key_pair=key_pair, listen_addrs=listen)
    gossipsub = GossipSub(
        protocols=[PROTOCOL_ID_V11],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
    )
    pubsub = Pubsub(host, gossipsub, strict_signing=True)
    try:
        async with host.run(listen_addrs=listen):
            async with background_trio_service(pubsub), background_trio_service(gossipsub):
                await pubsub.wait_until_ready()
                subscription = await pubsub.subscribe(TOPIC)
                info = info_from_p2p_addr(multiaddr.Multiaddr(entry))

                step = "connect"
                with trio.fail_after(STEP_TIMEOUT):
                    await host.connect(info)
                step = "identify the entry node"
                with trio.fail_after(STEP_TIMEOUT):
                    seen["identify_entry"] = await identify(host, info.peer_id)

                step = "receive a signed route update by gossip"
                with trio.fail_after(60):
                    seen["gossip"] = await gossip_update(subscription, capability)

                step = "sync the entry's table"
                with trio.fail_after(STEP_TIMEOUT):
                    seen["sync"] = await sync_table(host, info.peer_id)

                step = "find providers in the DHT"
                with trio.fail_after(STEP_TIMEOUT):
                    found = await providers(host, info.peer_id, kind)
                seen["providers"] = found
                origin = seen["gossip"]["origin"]
                record = next((p for p in found if p["peer"] == origin), None)
                if record is None or not record["addrs"]:
                    raise Failed(f"the DHT does not name {origin} with addresses: {found}")

                step = "dial the provider at the record's addresses"
                provider = ID.from_base58(origin)
                addrs = [multiaddr.Multiaddr(a) for a in record["addrs"]]
                with trio.fail_after(STEP_TIMEOUT):
                    await host.connect(PeerInfo(provider, addrs))
                    seen["identify_provider"] = await identify(host, provider)

                chat = json.dumps(
                    {
                        "model": "whatever-the-client-wrote",
                        "messages": [{"role": "user", "content": "What do alpacas eat?"}],
                    }
                ).encode()
                step = "intent"
                with trio.fail_after(STEP_TIMEOUT):
                    seen["intent"] = await intent(
                        host, provider, intent_request(capability, CHAT, chat, 0)
                    )
                step = "intent refusals"
                with trio.fail_after(STEP_TIMEOUT):
                    seen["refused_hops"] = await intent(
                        host, provider, intent_request(capability, CHAT, chat, 9)
                    )
                    seen["refused_unknown"] = await intent(
                        host, provider, intent_request("nobody/offers-this", CHAT, chat, 0)
                    )
                    seen["refused_kind"] = await intent(
                        host, provider, intent_request(capability, EMBEDDINGS, chat, 0)
                    )
                step = "stream"
                with trio.fail_after(STEP_TIMEOUT):
                    seen["stream"] = await streamed(
                        host, provider, intent_request(capability, CHAT, chat, 0)
                    )
                    seen["stream_refused"] = await streamed(
                        host, provider, intent_request("nobody/offers-this", CHAT, chat, 0)
                    )
    except Exception as e:  # report which step broke, and how
        raise Failed(f"{step}: {type(e).__name__}: {e}") from e
    return seen


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    try:
        seen = trio.run(run, *sys.argv[1:])
    except Failed as e:
        print(f"interop peer failed at {e}", file=sys.stderr)
        return 1
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
