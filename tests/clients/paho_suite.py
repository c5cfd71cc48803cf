#!/usr/bin/env python3
"""What the Eclipse Paho interoperability suites (3.1.1 and 5.0) check,
written for testament against a broker started with the README's Paho
configuration (anonymous clients, subscriptions to `test/nosubscribe`
refused, everything else allowed, Server Keep Alive 60).

Clients: paho-mqtt 2.x, and a raw socket where a check needs what paho does
not let a client do (stay silent past its keep alive, exceed the server's
Receive Maximum, read the topic aliases the server assigns).

Usage: paho_suite.py HOST PORT — prints `PASS name` or `FAIL name: why` per
check, exits 1 if any failed.
"""

import queue
import socket
import struct
import sys
import threading
import time
import traceback

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST, PORT = sys.argv[1], int(sys.argv[2])
V3, V5 = mqtt.MQTTv311, mqtt.MQTTv5

# The suites' topics.
TOPICS = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
WILDTOPICS = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")
NOSUBSCRIBE = "test/nosubscribe"


class Check(Exception):
    pass


def expect(cond, why):
    if not cond:
        raise Check(why)


# ---------------------------------------------------------------- paho ----


class Client:
    """A paho client that collects what it receives."""

    def __init__(self, client_id, version, clean=True, expiry=None, receive_max=None,
                 manual_ack=False, keepalive=60, will=None, topic_alias_max=None):
        kwargs = {"clean_session": clean} if version == V3 else {}
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=version, manual_ack=manual_ack, **kwargs)
        self.version = version
        self.messages = queue.Queue()
        self.subacks = queue.Queue()
        self.connacks = queue.Queue()
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = lambda c, u, mid, codes, props: self.subacks.put(
            [int(rc.value) for rc in codes])
        self.c.on_connect = lambda c, u, flags, rc, props: self.connacks.put(
            (flags, int(rc.value), props))
        if will:
            self.c.will_set(*will)
        props = None
        if version == V5:
            props = Properties(PacketTypes.CONNECT)
            if expiry is not None:
                props.SessionExpiryInterval = expiry
            if receive_max is not None:
                props.ReceiveMaximum = receive_max
            if topic_alias_max is not None:
                props.TopicAliasMaximum = topic_alias_max
            self.c.connect(HOST, PORT, keepalive=keepalive, clean_start=clean, properties=props)
        else:
            self.c.connect(HOST, PORT, keepalive=keepalive)
        self.c.loop_start()
        flags, rc, self.connack_props = self.connacks.get(timeout=5)
        expect(rc == 0, f"{client_id}: CONNACK {rc:#x}")
        self.session_present = flags.session_present

    def subscribe(self, topic, qos):
        self.c.subscribe(topic, qos)
        return self.subacks.get(timeout=5)

    def publish(self, topic, payload, qos=0, retain=False):
        info = self.c.publish(topic, payload, qos, retain)
        if qos > 0:
            info.wait_for_publish(timeout=5)
            expect(info.is_published(), f"publish to {topic} not acknowledged")

    def received(self, wait=1.0, count=None):
        """What arrived within `wait` seconds (or once `count` arrived)."""
        out = []
        deadline = time.monotonic() + wait
        while count is None or len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return out

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def clear_retained():
    c = Client("clean-retained", V3)
    for t in TOPICS:
        c.publish(t, b"", 1, retain=True)
    c.close()


# ----------------------------------------------------------------- raw ----


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(x):
    x = x.encode() if isinstance(x, str) else x
    return struct.pack(">H", len(x)) + x


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def props(*pairs):
    body = b"".join(bytes([pid]) + value for pid, value in pairs)
    return varint(len(body)) + body


# Property ids and how their values are read (MQTT 5.0 §2.2.2.2).
BYTE, TWO, FOUR, VAR, STR, BIN, PAIR = range(7)
PROPERTY = {
    0x01: BYTE, 0x02: FOUR, 0x03: STR, 0x08: STR, 0x09: BIN, 0x0B: VAR, 0x11: FOUR,
    0x12: STR, 0x13: TWO, 0x15: STR, 0x16: BIN, 0x17: BYTE, 0x18: FOUR, 0x19: BYTE,
    0x1A: STR, 0x1C: STR, 0x1F: STR, 0x21: TWO, 0x22: TWO, 0x23: TWO, 0x24: BYTE,
    0x25: BYTE, 0x26: PAIR, 0x27: FOUR, 0x28: BYTE, 0x29: BYTE, 0x2A: BYTE,
}


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n):
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def var(self):
        n, shift = 0, 0
        while True:
            b = self.u8()
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    def string(self):
        return self.take(self.u16())

    def properties(self):
        end = self.var() + self.at
        out = {}
        while self.at < end:
            pid = self.var()
            kind = PROPERTY[pid]
            value = {BYTE: self.u8, TWO: self.u16, FOUR: self.u32, VAR: self.var,
                     STR: self.string, BIN: self.string,
                     PAIR: lambda: (self.string(), self.string())}[kind]()
            out[pid] = value
        return out

    def rest(self):
        return self.take(len(self.data) - self.at)


class Raw:
    """One connection over a plain socket, our own bytes."""

    def __init__(self, version, client_id, keepalive=60, clean=True, will=None,
                 connect_props=b"", will_props=b""):
        self.version = 5 if version == V5 else 4
        self.sock = socket.create_connection((HOST, PORT), timeout=10)
        flags = 0x02 if clean else 0
        payload = s(client_id)
        if will:
            topic, message, qos, retain = will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            if self.version == 5:
                payload += will_props or props()
            payload += s(topic) + s(message)
        body = s("MQTT") + bytes([self.version, flags]) + struct.pack(">H", keepalive)
        if self.version == 5:
            body += connect_props or props()
        self.sock.sendall(packet(0x10, body + payload))
        kind, _, body = self.read(5)
        expect(kind == 2, f"CONNACK expected, got packet type {kind}")
        r = Reader(body)
        r.u8()
        self.connack_code = r.u8()
        self.connack_props = r.properties() if self.version == 5 and r.at < len(body) else {}

    def send(self, data):
        self.sock.sendall(data)

    def read(self, timeout):
        """(type, flags, body) of the next packet, or None at EOF/timeout."""
        self.sock.settimeout(timeout)
        try:
            first = self.sock.recv(1)
            if not first:
                return None
            n, shift = 0, 0
            while True:
                b = self.sock.recv(1)[0]
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            body = b""
            while len(body) < n:
                more = self.sock.recv(n - len(body))
                if not more:
                    return None
                body += more
            return first[0] >> 4, first[0] & 0x0F, body
        except (socket.timeout, ConnectionResetError, BrokenPipeError):
            return None

    def subscribe(self, topic, qos):
        body = struct.pack(">H", 1)
        if self.version == 5:
            body += props()
        self.send(packet(0x82, body + s(topic) + bytes([qos])))
        got = self.read(5)
        expect(got and got[0] == 9, "SUBACK expected")

    def publish_v5(self, body):
        """(topic, alias, payload) of a 5.0 PUBLISH's body (QoS 0)."""
        r = Reader(body)
        topic = r.string().decode()
        properties = r.properties()
        return topic, properties.get(0x23), r.rest()

    def abort(self):
        """Gone without DISCONNECT: the will follows."""
        self.sock.close()


# -------------------------------------------------------------- checks ----

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def basic(version):
    c = Client(f"basic-{version}", version)
    expect(c.subscribe(TOPICS[0], 2) == [2], "SUBACK")
    for qos in (0, 1, 2):
        c.publish(TOPICS[0], f"qos {qos}".encode(), qos)
    got = c.received(3, count=3)
    expect(sorted(m.payload for m in got) == [b"qos 0", b"qos 1", b"qos 2"], f"{got}")
    c.close()


@check
def retained_messages(version):
    clear_retained()
    c = Client(f"retained-{version}", version)
    for qos, t in zip((0, 1, 2), TOPICS[1:4]):
        c.publish(t, b"retained", qos, retain=True)
    time.sleep(0.2)
    c.subscribe(WILDTOPICS[5], 2)
    got = c.received(2, count=3)
    expect(len(got) == 3 and all(m.retain for m in got),
           f"3 retained on {WILDTOPICS[5]}: {[(m.topic, m.retain) for m in got]}")
    c.close()
    clear_retained()
    c = Client(f"retained-{version}", version)
    c.subscribe(WILDTOPICS[5], 2)
    got = c.received(1)
    expect(got == [], f"cleared retained still sent: {[m.topic for m in got]}")
    c.close()


@check
def will_message(version):
    m = Client(f"will-mon-{version}", version)
    m.subscribe(TOPICS[2], 2)
    r = Raw(version, f"will-{version}", will=(TOPICS[2], b"client not disconnected", 2, False))
    expect(r.connack_code == 0, "CONNACK")
    r.abort()
    got = m.received(5, count=1)
    expect([x.payload for x in got] == [b"client not disconnected"], f"{got}")
    m.close()


@check
def zero_length_client_id(version):
    if version == V3:
        # Clean Session 1: accepted; 0: refused with 0x02 [MQTT-3.1.3-8].
        ok = Raw(V3, "", clean=True)
        expect(ok.connack_code == 0, f"clean: CONNACK {ok.connack_code}")
        ok.abort()
        refused = Raw(V3, "", clean=False)
        expect(refused.connack_code == 0x02, f"persistent: CONNACK {refused.connack_code}")
        refused.abort()
    else:
        c = Raw(V5, "")
        expect(c.connack_code == 0, f"CONNACK {c.connack_code:#x}")
        expect(c.connack_props.get(0x12), "no Assigned Client Identifier")
        c.abort()


@check
def offline_message_queueing(version):
    name = f"offline-{version}"
    c = Client(name, version, clean=True, expiry=99999)
    c.close()
    c = Client(name, version, clean=False, expiry=99999)
    c.subscribe(WILDTOPICS[5], 2)
    c.close()
    p = Client(f"offline-pub-{version}", version)
    for qos, t in zip((0, 1, 2), TOPICS[1:4]):
        p.publish(t, b"queued", qos)
    p.close()
    c = Client(name, version, clean=False, expiry=99999)
    expect(c.session_present, "session not present")
    got = c.received(3, count=3)
    # QoS 0 may be dropped; QoS 1 and 2 must come.
    expect(len(got) in (2, 3), f"{[(m.topic, m.qos) for m in got]}")
    expect({TOPICS[2], TOPICS[3]} <= {m.topic for m in got}, f"{[m.topic for m in got]}")
    c.close()
    Client(name, version, clean=True, expiry=0).close()


@check
def overlapping_subscriptions(version):
    c = Client(f"overlap-{version}", version)
    c.subscribe(WILDTOPICS[6], 2)
    c.subscribe(WILDTOPICS[0], 1)
    c.publish(TOPICS[3], b"overlapping", 2)
    got = c.received(2, count=2)
    qos = sorted(m.qos for m in got)
    # One delivery at the highest QoS, or one per subscription.
    expect(qos in ([2], [1, 2]), f"{[(m.topic, m.qos) for m in got]}")
    c.close()


@check
def keepalive(version):
    m = Client(f"ka-mon-{version}", version)
    m.subscribe(TOPICS[4], 2)
    # Silent after CONNECT, with a keep alive of 2 s: closed within 1.5×.
    r = Raw(version, f"ka-{version}", keepalive=2, will=(TOPICS[4], b"keepalive expiry", 2, False))
    start = time.monotonic()
    got = m.received(6, count=1)
    took = time.monotonic() - start
    expect([x.payload for x in got] == [b"keepalive expiry"], f"{got}")
    expect(2.0 <= took <= 5.0, f"will after {took:.1f} s")
    r.abort()
    m.close()


@check
def subscribe_failure(version):
    c = Client(f"subfail-{version}", version)
    codes = c.subscribe(NOSUBSCRIBE, 2)
    expect(codes[0] >= 0x80, f"SUBACK {codes}")
    if version == V5:
        expect(codes[0] == 0x87, f"5.0: 0x87 Not authorized expected, {codes}")
    c.close()


@check
def wildcards_beside_the_denied_topic(version):
    c = Client(f"wild-{version}", version)
    for w in ("#", "+/+", "test/#"):
        codes = c.subscribe(w, 1)
        expect(codes == [1], f"{w}: SUBACK {codes}")
    p = Client(f"wild-pub-{version}", version)
    p.publish(NOSUBSCRIBE, b"hidden", 1)
    p.publish("test/open", b"seen", 1)
    p.close()
    got = c.received(2, count=3)
    topics = {m.topic for m in got}
    expect(NOSUBSCRIBE not in topics, f"{NOSUBSCRIBE} delivered: {topics}")
    expect("test/open" in topics, f"test/open missing: {topics}")
    c.close()


@check
def unsubscribe(version):
    c = Client(f"unsub-{version}", version)
    c.subscribe(TOPICS[0], 2)
    c.c.unsubscribe(TOPICS[0])
    time.sleep(0.3)
    c.publish(TOPICS[0], b"after unsubscribe", 1)
    expect(c.received(1) == [], "delivered after UNSUBSCRIBE")
    c.close()


@check
def server_keep_alive(version):
    if version == V3:
        return "5.0 only"
    c = Client("ska", V5, keepalive=120)
    ska = getattr(c.connack_props, "ServerKeepAlive", None)
    expect(ska == 60, f"Server Keep Alive {ska}")
    c.close()


@check
def will_delay(version):
    if version == V3:
        return "5.0 only"
    m = Client("delay-mon", V5)
    m.subscribe(TOPICS[2], 2)
    r = Raw(V5, "delay", will=(TOPICS[2], b"delayed", 2, False),
            connect_props=props((0x11, struct.pack(">I", 5))),
            will_props=props((0x18, struct.pack(">I", 3))))
    start = time.monotonic()
    r.abort()
    got = m.received(8, count=1)
    took = time.monotonic() - start
    expect([x.payload for x in got] == [b"delayed"], f"{got}")
    expect(2.5 <= took <= 6.0, f"will after {took:.1f} s, its delay is 3 s")
    m.close()


@check
def flow_control_client_receive_maximum(version):
    if version == V3:
        return "5.0 only"
    c = Client("flow1", V5, receive_max=2, manual_ack=True)
    c.subscribe(TOPICS[0], 1)
    p = Client("flow1-pub", V5)
    for i in range(4):
        p.publish(TOPICS[0], f"{i}".encode(), 1)
    first = c.received(1.5)
    expect(len(first) == 2, f"{len(first)} in flight, Receive Maximum 2")
    for msg in first:
        c.c.ack(msg.mid, msg.qos)
    rest = c.received(3, count=2)
    expect(len(rest) == 2, f"{len(rest)} after the acknowledgements")
    for msg in rest:
        c.c.ack(msg.mid, msg.qos)
    p.close()
    c.close()


@check
def flow_control_receive_maximum_exceeded(version):
    if version == V3:
        return "5.0 only"
    r = Raw(V5, "flow2")
    maximum = r.connack_props.get(0x21, 65535)
    expect(maximum < 1000, f"Receive Maximum {maximum}")
    # QoS 2 publishes without PUBREL stay in flight: one more than allowed.
    burst = b"".join(
        packet(0x34, s(TOPICS[0]) + struct.pack(">H", i) + props() + b"x")
        for i in range(1, maximum + 2))
    r.send(burst)
    reason = None
    while True:
        got = r.read(5)
        if got is None:
            break
        if got[0] == 14:
            reason = got[2][0] if got[2] else 0
            break
    expect(reason == 0x93, f"DISCONNECT {reason} (0x93 Receive Maximum exceeded expected)")
    r.abort()


def publish_three(topic):
    p = Client("alias-pub", V5)
    for i in range(3):
        p.publish(topic, f"{i}".encode(), 1)
    p.close()


@check
def server_topic_aliases(version):
    if version == V3:
        return "5.0 only"
    r = Raw(V5, "alias", connect_props=props((0x22, struct.pack(">H", 2))))
    r.subscribe(TOPICS[0], 0)
    publish_three(TOPICS[0])
    seen = []
    while len(seen) < 3:
        got = r.read(3)
        expect(got is not None, f"3 messages expected, {seen}")
        if got[0] == 3:
            seen.append(r.publish_v5(got[2]))
    topic, alias, _ = seen[0]
    expect(topic == TOPICS[0] and alias in (1, 2), f"first: {seen[0]}")
    for later in seen[1:]:
        expect(later[0] == "" and later[1] == alias, f"later: {later}")
    r.abort()
    # paho passes aliases on to the application, which keeps the map (as
    # the suite's own callbacks do): every message resolves to its topic.
    c = Client("alias-paho", V5, topic_alias_max=2)
    c.subscribe(TOPICS[0], 0)
    publish_three(TOPICS[0])
    got = c.received(3, count=3)
    aliases, topics = {}, []
    for m in got:
        alias = getattr(m.properties, "TopicAlias", None)
        if m.topic:
            aliases[alias] = m.topic
        topics.append(m.topic or aliases.get(alias))
    expect(topics == [TOPICS[0]] * 3, f"{topics}")
    expect(any(m.topic == "" for m in got), "paho got no aliased message")
    c.close()


def main():
    failed = 0
    for version, name in ((V3, "3.1.1"), (V5, "5.0")):
        for fn in CHECKS:
            label = f"{name} {fn.__name__}"
            try:
                not_applicable = fn(version)
                if not_applicable:
                    print(f"N/A {label} ({not_applicable})", flush=True)
                else:
                    print(f"PASS {label}", flush=True)
            except Exception as e:  # noqa: BLE001 — a check's failure, whatever it is
                failed += 1
                detail = e if isinstance(e, Check) else traceback.format_exc()
                print(f"FAIL {label}: {detail}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    threading.excepthook = lambda args: None
    main()
