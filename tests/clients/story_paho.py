"""The DESIGN story with paho-mqtt: a monitor and a server with a retained will.

Usage: story_paho.py HOST PORT SERVER_TOKEN MONITOR_TOKEN
Prints `ready` once the monitor saw `up`; on the line `crash` from stdin the
server's socket is closed without DISCONNECT; then prints every state message
the monitor gets (`topic payload`) for three seconds and exits.
"""

import sys
import threading
import time

import paho.mqtt.client as mqtt

host, port, server_token, monitor_token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
STATE = "trusted/paho-srv/state"
seen = []
up = threading.Event()


def on_message(client, userdata, msg):
    text = msg.payload.decode()
    seen.append(f"{msg.topic} {text}")
    if text == "up":
        up.set()


monitor = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-mon", protocol=mqtt.MQTTv5)
monitor.username_pw_set("paho-mon", monitor_token)
monitor.on_message = on_message
monitor.connect(host, port, keepalive=60)
monitor.subscribe("trusted/+/state", qos=1)
monitor.loop_start()

server = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-srv", protocol=mqtt.MQTTv311)
server.username_pw_set("paho-srv", server_token)
server.will_set(STATE, "down", qos=1, retain=True)
server.connect(host, port, keepalive=60)
server.loop_start()
time.sleep(0.5)
server.publish(STATE, "up", qos=1, retain=True)

if not up.wait(5):
    print("no up", flush=True)
    sys.exit(1)
print("ready", flush=True)
line = sys.stdin.readline().strip()
if line == "crash":
    server.loop_stop()
    server.socket().close()  # no DISCONNECT: the process "died"
time.sleep(3)
for s in seen:
    print(s, flush=True)
monitor.loop_stop()
