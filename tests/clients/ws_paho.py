"""MQTT over WebSockets with paho-mqtt's websocket transport, against the
testament binary: a monitor (MQTT 5.0) and a server with a will (3.1.1)
connect over ws:// (or wss:// with a CA file); the server says "up", its
connection is cut, the monitor gets "down".

usage: ws_paho.py HOST PORT PATH SERVER_TOKEN MONITOR_TOKEN [CA_FILE]
Prints one line per step; exits 0 when every step held."""

import sys
import threading
import time

import paho.mqtt.client as mqtt

host, port, path, srv_token, mon_token = sys.argv[1:6]
ca = sys.argv[6] if len(sys.argv) > 6 else None
port = int(port)
got = []
ready = threading.Event()


def client(cid, user, token, protocol):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                    protocol=protocol, transport="websockets")
    c.ws_set_options(path=path)
    if ca:
        c.tls_set(ca_certs=ca)
    c.username_pw_set(user, token)
    return c


def fail(why):
    print("FAIL", why)
    sys.exit(1)


mon = client("mon", "mon", mon_token, mqtt.MQTTv5)
mon.on_message = lambda c, u, m: got.append((m.topic, m.payload.decode()))
mon.on_subscribe = lambda *a: ready.set()
mon.connect(host, port)
mon.loop_start()
mon.subscribe("open/+/state", qos=1)
if not ready.wait(5):
    fail("no SUBACK")
print("OK monitor subscribed over websocket")

srv = client("srv", "srv", srv_token, mqtt.MQTTv311)
srv.will_set("open/srv/state", "down", qos=1)
connected = threading.Event()
srv.on_connect = lambda c, u, f, rc, p=None: connected.set() if rc == 0 else None
srv.connect(host, port)
srv.loop_start()
if not connected.wait(5):
    fail("server not connected")
srv.publish("open/srv/state", "up", qos=1).wait_for_publish(5)
deadline = time.time() + 5
while ("open/srv/state", "up") not in got and time.time() < deadline:
    time.sleep(0.05)
if ("open/srv/state", "up") not in got:
    fail(f"no 'up': {got}")
print("OK up delivered over websocket")

# The server's connection is cut without a DISCONNECT.
srv.loop_stop()
srv.socket().close()
deadline = time.time() + 5
while ("open/srv/state", "down") not in got and time.time() < deadline:
    time.sleep(0.05)
if ("open/srv/state", "down") not in got:
    fail(f"no will: {got}")
print("OK will delivered over websocket")
mon.disconnect()
mon.loop_stop()
