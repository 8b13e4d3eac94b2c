// One "machine" of the fleet: a cluster primary that keeps one worker per
// CPU running (a worker that dies is replaced), each worker serving on the
// machine's shared port:
//
//   GET /         which machine and worker answered, and the visit count
//                 of the client's session (cookie `sid`), kept in the store
//   GET /healthz  200 while the worker serves, 503 once it is stopping
//   GET /ws       a WebSocket that greets, then echoes every message
//
// Run: MACHINE=machine-1 PORT=4101 STORE_URL=http://127.0.0.1:4100 node app.js
// WORKERS overrides the number of workers.
"use strict";
const cluster = require("cluster");
// The workers accept from the shared socket themselves, rather than the
// primary accepting and handing each connection to a worker in turn: a
// connection accepted just as a worker dies then waits in the socket for a
// live one, instead of being handed to the dead one and never answered.
cluster.schedulingPolicy = cluster.SCHED_NONE;
const crypto = require("crypto");
const http = require("http");
const os = require("os");
const ws = require("./websocket");

const MACHINE = process.env.MACHINE || os.hostname();
const PORT = Number(process.env.PORT || 4101);
const STORE_URL = process.env.STORE_URL || "http://127.0.0.1:4100";
const WORKERS = Number(process.env.WORKERS) || (os.availableParallelism ? os.availableParallelism() : os.cpus().length);
// The primary gives up when this many workers die within RESTART_WINDOW_MS:
// a worker that cannot start is not helped by starting it forever.
const MAX_RESTARTS = 10;
const RESTART_WINDOW_MS = 10000;
// A stopping worker waits this long for its requests, then exits anyway.
const STOP_TIMEOUT_MS = 5000;

function log(message) {
  console.log(`[${MACHINE}] ${message}`);
}

function primary() {
  let stopping = false;
  const deaths = [];
  cluster.on("listening", (worker) => {
    log(`worker ${worker.id} (pid ${worker.process.pid}) serving on 127.0.0.1:${PORT}`);
  });
  cluster.on("exit", (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
      return;
    }
    const now = Date.now();
    deaths.push(now);
    while (deaths[0] < now - RESTART_WINDOW_MS) deaths.shift();
    if (deaths.length >= MAX_RESTARTS) {
      log(`${deaths.length} workers died within ${RESTART_WINDOW_MS / 1000} s; giving up`);
      process.exit(1);
    }
    log(`worker ${worker.id} (pid ${worker.process.pid}) died (${signal || `exit ${code}`}); starting another`);
    cluster.fork();
  });
  for (const signal of ["SIGTERM", "SIGINT"]) {
    process.on(signal, () => {
      stopping = true;
      for (const worker of Object.values(cluster.workers)) worker.process.kill("SIGTERM");
      setTimeout(() => process.exit(0), STOP_TIMEOUT_MS + 1000).unref();
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
    });
  }
  log(`primary pid ${process.pid}: starting ${WORKERS} workers`);
  for (let i = 0; i < WORKERS; i++) cluster.fork();
}

// ---------------------------------------------------------------- worker

const who = () => `${MACHINE} worker ${cluster.worker.id}`;
const storeAgent = new http.Agent({ keepAlive: true, maxSockets: 32 });

// INCR in the store. A kept-alive connection the store closed as the
// request went out is retried once on a new one (Node's advice for
// `reusedSocket`); any other error is the caller's.
function incr(key, retried = false) {
  return new Promise((resolve, reject) => {
    const url = `${STORE_URL}/incr/${encodeURIComponent(key)}`;
    const req = http.request(url, { method: "POST", agent: storeAgent, timeout: 2000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => (res.statusCode === 200 ? resolve(Number(body)) : reject(new Error(`store answered ${res.statusCode}`))));
    });
    req.on("timeout", () => req.destroy(new Error("store timed out")));
    req.on("error", (err) => {
      if (req.reusedSocket && err.code === "ECONNRESET" && !retried) {
        incr(key, true).then(resolve, reject);
      } else {
        reject(err);
      }
    });
    req.end();
  });
}

function sessionOf(req) {
  const cookies = req.headers.cookie || "";
  const match = /(?:^|;\s*)sid=([0-9a-f]{32})(?:;|$)/.exec(cookies);
  return match ? { sid: match[1], fresh: false } : { sid: crypto.randomBytes(16).toString("hex"), fresh: true };
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(body),
    "X-Served-By": who(),
    ...headers,
  });
  res.end(body);
}

function worker() {
  let stopping = false;
  const sockets = new Set();

  const server = http.createServer(async (req, res) => {
    const path = req.url.split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      return send(res, 405, "GET only\n", { Allow: "GET, HEAD" });
    }
    if (path === "/healthz") {
      return stopping ? send(res, 503, "stopping\n") : send(res, 200, `ok ${who()} pid ${process.pid}\n`);
    }
    if (path !== "/") {
      return send(res, 404, "not found\n");
    }
    const { sid, fresh } = sessionOf(req);
    try {
      const visits = await incr(`visits:${sid}`);
      const cookie = fresh ? { "Set-Cookie": `sid=${sid}; Path=/; HttpOnly; SameSite=Lax` } : {};
      send(res, 200, `${who()} (pid ${process.pid}): visit ${visits} of session ${sid.slice(0, 8)}\n`, cookie);
    } catch (err) {
      send(res, 503, `the store is unavailable: ${err.message}\n`);
    }
  });
  // Longer than Switchyard keeps an idle pooled connection (idle_timeout,
  // 60 s by default), so this side never closes one the proxy is reusing.
  server.keepAliveTimeout = 65000;
  server.headersTimeout = 66000;

  server.on("upgrade", (req, socket, head) => {
    const key = req.headers["sec-websocket-key"];
    const upgrade = (req.headers.upgrade || "").toLowerCase();
    if (req.url !== "/ws" || upgrade !== "websocket" || !key || req.headers["sec-websocket-version"] !== "13" || stopping) {
      socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${ws.acceptKey(key)}\r\nX-Served-By: ${who()}\r\n\r\n`,
    );
    echo(socket, head, sockets);
  });

  process.on("SIGTERM", () => {
    stopping = true;
    server.close(() => process.exit(0));
    if (server.closeIdleConnections) server.closeIdleConnections();
    for (const socket of sockets) {
      socket.end(ws.encode(ws.OP.close, ws.closePayload(1001, "going away")));
    }
    setTimeout(() => process.exit(0), STOP_TIMEOUT_MS).unref();
  });
  server.listen(PORT, "127.0.0.1");
}

// A WebSocket after its 101: a greeting, then every data frame echoed,
// pings answered, and a close answered with a close.
function echo(socket, head, sockets) {
  const reader = new ws.FrameReader();
  const write = (opcode, payload, fin = true) => socket.write(ws.encode(opcode, payload, { fin }));
  const close = (code, reason) => {
    socket.end(ws.encode(ws.OP.close, ws.closePayload(code, reason)));
    socket.removeAllListeners("data");
  };
  sockets.add(socket);
  socket.setNoDelay(true);
  socket.on("close", () => sockets.delete(socket));
  socket.on("error", () => socket.destroy());
  socket.on("data", (chunk) => {
    reader.push(chunk);
    try {
      for (let frame = reader.next(); frame; frame = reader.next()) {
        if (!frame.masked) return close(1002, "client frames must be masked");
        switch (frame.opcode) {
          case ws.OP.text:
          case ws.OP.binary:
          case ws.OP.continuation:
            write(frame.opcode, frame.payload, frame.fin);
            break;
          case ws.OP.ping:
            write(ws.OP.pong, frame.payload);
            break;
          case ws.OP.pong:
            break;
          case ws.OP.close:
            return close(frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : 1000, "");
          default:
            return close(1002, `unknown opcode ${frame.opcode}`);
        }
      }
    } catch (err) {
      close(1009, err.message);
    }
  });
  write(ws.OP.text, Buffer.from(`connected to ${who()} (pid ${process.pid})`));
  if (head.length) socket.emit("data", head);
}

if (cluster.isPrimary) {
  primary();
} else {
  worker();
}
