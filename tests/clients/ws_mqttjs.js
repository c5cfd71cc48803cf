// MQTT over WebSockets with MQTT.js, the client browsers run, against the
// testament binary: a monitor (MQTT 5.0) and a server with a will (3.1.1)
// connect over ws:// (or wss:// with a CA file); the server says "up", its
// socket is destroyed, the monitor gets "down".
//
// usage: node ws_mqttjs.js URL SERVER_TOKEN MONITOR_TOKEN [CA_FILE]
// Prints one line per step; exits 0 when every step held.
const fs = require("fs");
const mqtt = require("mqtt");

const [url, srvToken, monToken, ca] = process.argv.slice(2);
const tls = ca ? { ca: fs.readFileSync(ca) } : {};
const fail = (why) => {
  console.log("FAIL", why);
  process.exit(1);
};
const within = (ms, what, test) =>
  new Promise((resolve) => {
    const start = Date.now();
    const tick = () => {
      if (test()) return resolve();
      if (Date.now() - start > ms) fail(what);
      setTimeout(tick, 50);
    };
    tick();
  });

(async () => {
  const got = [];
  const mon = await mqtt.connectAsync(url, {
    clientId: "mon", username: "mon", password: monToken, protocolVersion: 5,
    reconnectPeriod: 0, ...tls,
  });
  mon.on("message", (topic, payload) => got.push(`${topic}=${payload}`));
  await mon.subscribeAsync("open/+/state", { qos: 1 });
  console.log("OK monitor subscribed over websocket");

  const srv = await mqtt.connectAsync(url, {
    clientId: "srv", username: "srv", password: srvToken, protocolVersion: 4,
    reconnectPeriod: 0,
    will: { topic: "open/srv/state", payload: "down", qos: 1, retain: false },
    ...tls,
  });
  await srv.publishAsync("open/srv/state", "up", { qos: 1 });
  await within(5000, `no up: ${got}`, () => got.includes("open/srv/state=up"));
  console.log("OK up delivered over websocket");

  // The server's socket is destroyed without a DISCONNECT.
  srv.stream.destroy();
  await within(5000, `no will: ${got}`, () => got.includes("open/srv/state=down"));
  console.log("OK will delivered over websocket");
  await mon.endAsync();
  process.exit(0);
})().catch((e) => fail(e.stack || e));
