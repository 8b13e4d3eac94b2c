// What run.sh uses to talk to the fleet through Switchyard:
//
//   node client.js load URL COUNT CONCURRENCY [--kill PID --after N]
//       COUNT GETs, CONCURRENCY at a time over kept-alive connections; then
//       one line per machine (and worker) that answered, and the failures.
//       With --kill, sends SIGKILL to PID once N responses have arrived.
//       Exits 1 if any request failed.
//   node client.js ws URL MESSAGE
//       opens a WebSocket, prints the greeting, sends MESSAGE and checks
//       that the echo is the same. Exits 1 otherwise.
//
// Every request and the whole run have deadlines, so it always ends.
"use strict";
const crypto = require("crypto");
const http = require("http");
const ws = require("./websocket");

const REQUEST_TIMEOUT_MS = 5000;
const RUN_TIMEOUT_MS = 60000;

function get(url, agent) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode, servedBy: res.headers["x-served-by"] || "?" }));
      res.on("error", (err) => resolve({ error: err.message }));
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (err) => resolve({ error: err.code || err.message }));
  });
}

async function load(url, count, concurrency, kill) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const byMachine = new Map();
  const failures = new Map();
  let started = 0;
  let done = 0;
  const worker = async () => {
    while (started < count) {
      started++;
      const r = await get(url, agent);
      done++;
      if (r.status === 200) {
        const [machine, , id] = r.servedBy.split(" ");
        const workers = byMachine.get(machine) || new Map();
        workers.set(id, (workers.get(id) || 0) + 1);
        byMachine.set(machine, workers);
      } else {
        const why = r.error || `status ${r.status}`;
        failures.set(why, (failures.get(why) || 0) + 1);
      }
      if (kill && done === kill.after) {
        process.kill(kill.pid, "SIGKILL");
        console.log(`  after ${done} responses: SIGKILL to pid ${kill.pid}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  const failed = [...failures.values()].reduce((a, b) => a + b, 0);
  console.log(`  ${count} requests, ${concurrency} at a time: ${failed} failed`);
  for (const [machine, workers] of [...byMachine].sort()) {
    const total = [...workers.values()].reduce((a, b) => a + b, 0);
    const each = [...workers].sort().map(([id, n]) => `worker ${id}: ${n}`).join(", ");
    console.log(`    ${machine.padEnd(10)} ${String(total).padStart(4)}   (${each})`);
  }
  for (const [why, n] of failures) console.log(`    failed: ${n} x ${why}`);
  return failed === 0;
}

// Resolves with the next frame, or rejects after the request deadline.
function nextFrame(socket, reader) {
  return new Promise((resolve, reject) => {
    const ready = reader.next();
    if (ready) return resolve(ready);
    const timer = setTimeout(() => reject(new Error("no frame in time")), REQUEST_TIMEOUT_MS);
    const onData = (chunk) => {
      reader.push(chunk);
      const frame = reader.next();
      if (frame) {
        clearTimeout(timer);
        socket.off("data", onData);
        resolve(frame);
      }
    };
    socket.on("data", onData);
  });
}

function websocket(url, message) {
  return new Promise((resolve, reject) => {
    const key = crypto.randomBytes(16).toString("base64");
    const req = http.get(url.replace(/^ws:/, "http:"), {
      timeout: REQUEST_TIMEOUT_MS,
      headers: { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": key },
    });
    req.on("timeout", () => req.destroy(new Error("no answer to the upgrade")));
    req.on("error", reject);
    req.on("response", (res) => reject(new Error(`upgrade answered ${res.statusCode}`)));
    req.on("upgrade", async (res, socket, head) => {
      try {
        if (res.headers["sec-websocket-accept"] !== ws.acceptKey(key)) throw new Error("wrong Sec-WebSocket-Accept");
        const reader = new ws.FrameReader();
        if (head.length) reader.push(head);
        const greeting = await nextFrame(socket, reader);
        socket.write(ws.encode(ws.OP.text, Buffer.from(message), { mask: true }));
        const echoed = (await nextFrame(socket, reader)).payload.toString();
        socket.write(ws.encode(ws.OP.close, ws.closePayload(1000), { mask: true }));
        const closed = await nextFrame(socket, reader);
        socket.destroy();
        const ok = echoed === message && closed.opcode === ws.OP.close;
        console.log(`  WebSocket: "${greeting.payload}"; sent "${message}", echoed "${echoed}"${ok ? "" : " (WRONG)"}`);
        resolve(ok);
      } catch (err) {
        socket.destroy();
        reject(err);
      }
    });
  });
}

async function main() {
  const [command, url, ...rest] = process.argv.slice(2);
  setTimeout(() => {
    console.error(`client: still running after ${RUN_TIMEOUT_MS / 1000} s; giving up`);
    process.exit(2);
  }, RUN_TIMEOUT_MS).unref();
  let ok;
  if (command === "load") {
    const [count, concurrency] = rest.map(Number);
    const flag = (name) => rest[rest.indexOf(name) + 1];
    const kill = rest.includes("--kill") ? { pid: Number(flag("--kill")), after: Number(flag("--after")) } : null;
    ok = await load(url, count, concurrency, kill);
  } else if (command === "ws") {
    ok = await websocket(url, rest.join(" ") || "hello");
  } else {
    console.error("usage: node client.js load URL COUNT CONCURRENCY [--kill PID --after N] | ws URL MESSAGE");
    process.exit(2);
  }
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(`client: ${err.message}`);
  process.exit(1);
});
