#!/usr/bin/env python3
"""A reader of the event log written from docs/RECORD_FORMAT.md alone, in another language.

Reads partition 0 of a topic from offset 0 to its end (read_committed), decodes every record
and applies the canonical rule, then prints one JSON document: verdict counts per key, the
number of malformed records, and every canonical event as [offset, key, index, digest].
The integration test `interop_python` compares this with the Rust reader's verdicts.

Usage: reader.py BOOTSTRAP TOPIC
"""
import hashlib
import json
import struct
import sys

from confluent_kafka import Consumer, TopicPartition

MAGIC = b"CT"
EVENTS_MAX = 10_000


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

    def short_text(self):
        try:
            return self.take(self.u8()).decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("utf-8")

    def key(self):
        key = self.short_text()
        if not key or any(c == "," or ord(c) < 32 or 127 <= ord(c) < 160 for c in key):
            raise Malformed("key")
        return key


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


def decode(value):
    """Returns the events of a record value as (key, index, digest) tuples, or raises Malformed."""
    if value is None:
        raise Malformed("no value")
    r = Reader(value)
    if r.take(2) != MAGIC:
        raise Malformed("magic")
    if r.u8() != 1:
        raise Malformed("version")
    r.key()  # source
    r.short_text()  # writer
    count = r.u32()
    if count == 0 or count > EVENTS_MAX:
        raise Malformed("count")
    events = []
    for _ in range(count):
        flags = r.u8()
        if flags & ~0b11:
            raise Malformed("flags")
        key = r.key()
        index = r.u64() if flags & 1 else None
        cause = r.u64() if flags & 2 else None
        effective = r.i64()
        content_type = r.short_text()
        stored = r.take(32)
        payload = r.take(r.u32())
        if digest(cause, effective, content_type, payload) != stored:
            raise Malformed("digest")
        events.append((key, index, stored))
    if r.at != len(value):
        raise Malformed("trailing bytes")
    return events


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "interop-reader",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    _, end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, 0)])
    counts, digests, stats, canonical, malformed = {}, {}, {}, [], 0
    position = 0
    while position < end:
        message = consumer.poll(5.0)
        if message is None:
            position = consumer.position([TopicPartition(topic, 0)])[0].offset
            continue
        if message.error():
            continue
        position = message.offset() + 1
        try:
            events = decode(message.value())
        except Malformed:
            malformed += 1
            continue
        for key, index, event_digest in events:
            count = counts.get(key, 0)
            s = stats.setdefault(key, {"canonical": 0, "duplicates": 0, "divergent": 0, "rejected": 0})
            i = count if index is None else index
            if i == count:
                counts[key] = count + 1
                digests.setdefault(key, []).append(event_digest)
                s["canonical"] += 1
                canonical.append([message.offset(), key, i, event_digest.hex()])
            elif i < count:
                s["divergent" if digests[key][i] != event_digest else "duplicates"] += 1
            else:
                s["rejected"] += 1
    consumer.close()
    json.dump({"malformed": malformed, "keys": stats, "canonical": canonical}, sys.stdout)


if __name__ == "__main__":
    main()
