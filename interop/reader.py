#!/usr/bin/env python3
"""A reader of the event log written from docs/RECORD_FORMAT.md alone, in another language.

Reads partition 0 of a topic from offset 0 to its end (read_committed), decodes every record
(its Kafka key and value) and applies the canonical rule, then prints one JSON document:
verdict counts per key, the number of malformed records, and every canonical event as
[offset, key, index, digest]. The integration test `interop_python` compares this with the
Rust reader's verdicts.

It also reads snapshots (docs/RECORD_FORMAT.md, "Snapshots"): the newest one of a DET that
loads, found through the index topic, its chunks read with a fresh canonical rule from the
manifest's offset, reassembled and checked against the manifest's digest; a corrupt or
missing one falls back to the one before. It prints {"skipped": [positions that did not
load], "manifest": ..., "snapshot": ...} (both null when none loads).

Protected keys (docs/RECORD_FORMAT.md, "Signed records"): with --trust CONFIG (a launcher
config whose [[trust.protected]] entries name the keys and their writers' Ed25519 public keys),
an event on a protected key counts only in a record signed by one of them; others are
"unauthorized" (counted, hidden, no count changes). Signatures are checked with the
`cryptography` package, and only for records holding a protected key.

Pipelines (docs/RECORD_FORMAT.md, "Pipelines"): a log of P pipelines is P partitions of its
topics, each read on its own (its own total order and canonical rule); --pipeline N reads
partition N of the log topic and of its snapshot topics (default 0). `pipeline_of` is the
shard function a producer routes an event by.

Usage:
  reader.py [--trust CONFIG] [--pipeline N] BOOTSTRAP TOPIC [DIGEST_WINDOW]
                               read the log, keeping DIGEST_WINDOW digests per key (at least
                               65536 to follow the format), applying CONFIG's trust table
  reader.py vectors SPEC       check the worked examples of SPEC (docs/RECORD_FORMAT.md)
  reader.py [--pipeline N] snapshot BOOTSTRAP LOG_TOPIC DET
                               read DET's newest snapshot of the log on LOG_TOPIC
  reader.py --shard KEY --pipelines P
                               print the pipeline of shard key KEY on a log of P pipelines
"""
import collections
import hashlib
import json
import re
import struct
import sys

MAGIC = b"CT"
UNSIGNED, SIGNED = 1, 2
# A signed record ends with the signer's public key and an Ed25519 signature.
PUBLIC_KEY_BYTES, SIGNATURE_BYTES = 32, 64
EVENTS_MAX = 10_000
# The most pipelines a log may have.
PIPELINES_MAX = 1024
# The name rule: source, event keys and writer ids.
NAME = re.compile(rb"[A-Za-z0-9._:-]{1,255}")
# Every reader compares a duplicate with the canonical digest at its index when it is at most
# this many indexes behind the count; older duplicates are not compared (advisory).
DIGEST_WINDOW = 65_536


class Malformed(Exception):
    pass


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n):
        if self.at + n > len(self.data):
            raise Malformed("truncated")
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def short_bytes(self):
        return self.take(self.u8())

    def short_text(self):
        try:
            return self.short_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("utf-8")

    def name(self, what):
        raw = self.short_bytes()
        if not NAME.fullmatch(raw):
            raise Malformed(what)
        return raw.decode("ascii")


def digest(cause, effective, content_type, payload):
    h = hashlib.sha256()
    if cause is None:
        h.update(b"\x00")
    else:
        h.update(b"\x01" + struct.pack(">Q", cause))
    h.update(struct.pack(">q", effective))
    ct = content_type.encode("utf-8")
    h.update(bytes([len(ct)]) + ct)
    h.update(payload)
    return h.digest()


def decode(kafka_key, value):
    """Returns the events of a record as (key, index, digest, payload) tuples, or raises
    Malformed. See decode_sealed for the signature."""
    return decode_sealed(kafka_key, value)[0]


def decode_sealed(kafka_key, value):
    """(events, seal): seal is None for an unsigned record (version 1), else (public key,
    signature, signed bytes) of a signed one (version 2), unchecked."""
    if value is None:
        raise Malformed("no value")
    r = Reader(value)
    if r.take(2) != MAGIC:
        raise Malformed("magic")
    version, seal = r.u8(), None
    if version == SIGNED:
        end = len(value) - PUBLIC_KEY_BYTES - SIGNATURE_BYTES
        if end < r.at:
            raise Malformed("seal")
        signature_at = len(value) - SIGNATURE_BYTES
        seal = (value[end:signature_at], value[signature_at:], value[:signature_at])
        r = Reader(value[:end])
        r.at = 3
    elif version != UNSIGNED:
        raise Malformed("version")
    source = r.name("source")
    r.name("writer")
    count = r.u32()
    if count == 0 or count > EVENTS_MAX:
        raise Malformed("count")
    events = []
    for _ in range(count):
        flags = r.u8()
        if flags & ~0b11:
            raise Malformed("flags")
        key = r.name("key")
        index = r.u64() if flags & 1 else None
        cause = r.u64() if flags & 2 else None
        effective = r.i64()
        content_type = r.short_text()
        stored = r.take(32)
        payload = r.take(r.u32())
        if digest(cause, effective, content_type, payload) != stored:
            raise Malformed("digest")
        events.append((key, index, stored, payload))
    if r.at != len(r.data):
        raise Malformed("trailing bytes")
    if kafka_key is None or kafka_key != source.encode("ascii"):
        raise Malformed("kafka key")
    return events, seal


def load_trust(path):
    """{protected key: set of public keys (bytes)} from a launcher config's [[trust.protected]]."""
    import base64
    import tomllib

    with open(path, "rb") as file:
        config = tomllib.load(file)
    trust = {}
    for entry in config.get("trust", {}).get("protected", []):
        writers = {base64.b64decode(text, validate=True) for text in entry["public_keys"]}
        for key in entry["keys"]:
            trust.setdefault(key, set()).update(writers)
    return trust


def verify(seal):
    """Whether the seal's signature is its public key's over the signed bytes (RFC 8032)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public_key, signature, signed = seal
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, signed)
        return True
    except (InvalidSignature, ValueError):
        return False


class Authority:
    """Whether a record's events may count: a key the table protects needs the record signed
    by one of its writers; the signature is checked once, and only if needed."""

    def __init__(self, trust, seal):
        self.trust, self.seal, self.verified = trust, seal, None

    def authorizes(self, key):
        writers = self.trust.get(key)
        if writers is None:
            return True
        if self.seal is None or self.seal[0] not in writers:
            return False
        if self.verified is None:
            self.verified = verify(self.seal)
        return self.verified


class Rule:
    """The canonical rule, keeping the last `window` canonical digests of each key."""

    def __init__(self, window=DIGEST_WINDOW, trust=None):
        self.window, self.trust = window, trust or {}
        self.counts, self.digests, self.stats = {}, {}, {}
        self.canonical, self.malformed = [], 0
        # Rejected events of keys with no canonical event yet: such keys get no entry.
        self.rejected_unseen = 0

    def apply(self, offset, kafka_key, value):
        """Judges the record's events; returns the canonical ones as (key, index, payload)."""
        try:
            events, seal = decode_sealed(kafka_key, value)
        except Malformed:
            self.malformed += 1
            return []
        canonical, authority = [], Authority(self.trust, seal)
        for key, index, event_digest, payload in events:
            if not authority.authorizes(key):
                # Protected keys are few: each gets an entry, counting what was ignored.
                self.stats.setdefault(key, self.new_stats())["unauthorized"] += 1
                continue
            count = self.counts.get(key, 0)
            if key not in self.stats and index is not None and index > 0:
                self.rejected_unseen += 1
                continue
            s = self.stats.setdefault(key, self.new_stats())
            window = self.digests.setdefault(key, collections.deque(maxlen=self.window))
            i = count if index is None else index
            if i == count:
                self.counts[key] = count + 1
                window.append(event_digest)
                s["canonical"] += 1
                self.canonical.append([offset, key, i, event_digest.hex()])
                canonical.append((key, i, payload))
            elif i < count:
                # The deque holds indexes count - len(window) .. count - 1.
                behind = count - i
                if behind <= len(window) and window[len(window) - behind] != event_digest:
                    s["divergent"] += 1
                else:
                    s["duplicates"] += 1
            else:
                s["rejected"] += 1
        return canonical

    def new_stats(self):
        stats = {"canonical": 0, "duplicates": 0, "divergent": 0, "rejected": 0}
        if self.trust:
            stats["unauthorized"] = 0
        return stats


def spec_vector(spec, name):
    """The bytes of the example after `<!-- vector: name -->`: the first word of each line of
    the code block that follows, in hex."""
    after = spec[spec.index(f"<!-- vector: {name} -->"):]
    block = after.split("```", 2)[1]
    return bytes.fromhex("".join(line.split()[0] for line in block.splitlines()[1:] if line.strip()))


def check_vectors(path):
    with open(path, encoding="utf-8") as file:
        spec = file.read()
    for case in ["with-cause", "without-cause"]:
        hashed = spec_vector(spec, f"digest-input-{case}")
        assert hashlib.sha256(hashed).digest() == spec_vector(spec, f"digest-{case}"), case
    # Worked example 1 through digest(): cause 42, time 1700000000000, application/json.
    assert digest(42, 1_700_000_000_000, "application/json", b'{"a":1}') == spec_vector(spec, "digest-with-cause")
    assert digest(None, -1, "", b"") == spec_vector(spec, "digest-without-cause")
    key, value = spec_vector(spec, "record-key"), spec_vector(spec, "record-value")
    events = decode(key, value)
    assert [(k, i, d.hex()) for k, i, d, _ in events][0] == (
        "matching-engine", 7, spec_vector(spec, "digest-with-cause").hex()), events
    assert [(k, i) for k, i, _, _ in events] == [("matching-engine", 7), ("matching-engine", 8)], events
    for bad_key in [None, b"", b"matching-engine ", b"orders"]:
        try:
            decode(bad_key, value)
            raise AssertionError(f"Kafka key {bad_key!r} accepted")
        except Malformed:
            pass
    # The signed example: version 2, the same events, a seal that verifies with RFC 8032's key.
    seal = spec_vector(spec, "signed-record-seal")
    signed = value[:2] + bytes([SIGNED]) + value[3:] + seal
    events_signed, found = decode_sealed(key, signed)
    assert events_signed == events and found[0] == seal[:PUBLIC_KEY_BYTES], found
    trust = {"matching-engine": {seal[:PUBLIC_KEY_BYTES]}}
    assert Authority(trust, found).authorizes("matching-engine")
    assert not Authority(trust, None).authorizes("matching-engine")
    assert Authority(trust, None).authorizes("orders")
    tampered = signed[:-1] + bytes([signed[-1] ^ 1])
    assert not Authority(trust, decode_sealed(key, tampered)[1]).authorizes("matching-engine")
    for name in [b"orders", b"matching-engine.dead-letters", b"host-a:2", b"A_1." * 63]:
        assert NAME.fullmatch(name), name
    for name in [b"", b"orders\n", b"or ders", b"a,b", b"a/b", "orders\u200b".encode(), b"k" * 256]:
        assert not NAME.fullmatch(name), name
    # "Pipelines": the shard function's worked examples.
    for shard_key, four, three in [("account-42", 1, 0), ("book-eu", 0, 1)]:
        assert (pipeline_of(shard_key, 4), pipeline_of(shard_key, 3)) == (four, three), shard_key
    print("the spec's worked examples check")


def pipeline_of(shard_key, pipelines):
    """The pipeline of the events sharded by `shard_key` (bytes, or text as UTF-8) on a log of
    `pipelines`: the first 8 bytes of its SHA-256 as a big-endian unsigned integer, modulo
    the count."""
    if not 1 <= pipelines <= PIPELINES_MAX:
        raise ValueError(f"a log has 1 to {PIPELINES_MAX} pipelines, not {pipelines}")
    if isinstance(shard_key, str):
        shard_key = shard_key.encode("utf-8")
    return int.from_bytes(hashlib.sha256(shard_key).digest()[:8], "big") % pipelines


# The pipeline (partition) this run reads: --pipeline N, else 0.
PIPELINE = 0


def records(bootstrap, topic, start):
    """(offset, Kafka key, value) of partition PIPELINE of `topic` from `start` to its end."""
    from confluent_kafka import Consumer, TopicPartition

    partition = PIPELINE

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "interop-reader",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    _, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    consumer.assign([TopicPartition(topic, partition, start)])
    position = start
    try:
        while position < end:
            message = consumer.poll(5.0)
            if message is None:
                position = max(position, consumer.position([TopicPartition(topic, partition)])[0].offset)
                continue
            if message.error():
                continue
            position = message.offset() + 1
            yield message.offset(), message.key(), message.value()
    finally:
        consumer.close()


def read(bootstrap, topic, window, trust):
    rule = Rule(window, trust)
    for offset, key, value in records(bootstrap, topic, 0):
        rule.apply(offset, key, value)
    json.dump({"malformed": rule.malformed, "rejected_on_unseen_keys": rule.rejected_unseen,
               "keys": rule.stats, "canonical": rule.canonical}, sys.stdout)


SNAPSHOT_FORMAT = 1
MANIFEST_FIELDS = ["transformer", "position", "inputs", "chunks", "bytes", "digest"]


def snapshot_from_chunks(manifest, chunks):
    """The snapshot (a dict) from its chunk payloads in index order, checked against its
    manifest: count, length, SHA-256 of the bytes, format, DET and position."""
    data = b"".join(chunks)
    if len(chunks) != manifest["chunks"] or len(data) != manifest["bytes"]:
        raise Malformed("chunks")
    if hashlib.sha256(data).hexdigest() != manifest["digest"]:
        raise Malformed("snapshot digest")
    snapshot = json.loads(data)
    if snapshot.get("format") != SNAPSHOT_FORMAT:
        raise Malformed("snapshot format")
    if (snapshot["transformer"], snapshot["position"]) != (manifest["transformer"], manifest["position"]):
        raise Malformed("another snapshot")
    return snapshot


def load_snapshot(bootstrap, log_topic, entry):
    """The snapshot an index entry names: a fresh rule from the entry's offset on, the key's
    canonical index 0 (the manifest) there, then its chunks at indexes 1..chunks."""
    key = f"{entry['transformer']}.snapshot.{entry['position']}"
    wanted = entry["chunks"] + 1
    rule, found = Rule(1), []
    for offset, kafka_key, value in records(bootstrap, f"{log_topic}.snapshots", entry["offset"]):
        for event_key, _, payload in rule.apply(offset, kafka_key, value):
            if event_key == key and len(found) < wanted:
                found.append((offset, payload))
        if len(found) == wanted:
            break
    if not found or found[0][0] != entry["offset"]:
        raise Malformed("no manifest at the offset")
    manifest = json.loads(found[0][1])
    if manifest != {field: entry[field] for field in MANIFEST_FIELDS}:
        raise Malformed("another manifest")
    return snapshot_from_chunks(manifest, [payload for _, payload in found[1:]])


def read_snapshot(bootstrap, log_topic, det):
    entries = []
    for _, key, value in records(bootstrap, f"{log_topic}.snapshot-index", 0):
        if key == det.encode("utf-8"):
            entries = json.loads(value)
    result = {"skipped": [], "manifest": None, "snapshot": None}
    for entry in sorted(entries, key=lambda e: e["position"], reverse=True):
        try:
            result["snapshot"] = load_snapshot(bootstrap, log_topic, entry)
            result["manifest"] = entry
            break
        except (Malformed, ValueError, KeyError):
            result["skipped"].append(entry["position"])
    json.dump(result, sys.stdout)


def main():
    global PIPELINE
    args, trust = sys.argv[1:], {}
    if args[0] == "--shard":
        if len(args) != 4 or args[2] != "--pipelines":
            sys.exit("usage: reader.py --shard KEY --pipelines P")
        print(pipeline_of(args[1], int(args[3])))
        return
    while args[0] in ("--trust", "--pipeline"):
        if args[0] == "--trust":
            trust = load_trust(args[1])
        else:
            PIPELINE = int(args[1])
            if not 0 <= PIPELINE < PIPELINES_MAX:
                sys.exit(f"--pipeline {PIPELINE}: a pipeline number is 0 to {PIPELINES_MAX - 1}")
        args = args[2:]
    if args[0] == "vectors":
        check_vectors(args[1])
    elif args[0] == "snapshot":
        read_snapshot(args[1], args[2], args[3])
    else:
        read(args[0], args[1], int(args[2]) if len(args) > 2 else DIGEST_WINDOW, trust)


if __name__ == "__main__":
    main()
