// The fleet's shared state, kept out of every app process: counters over
// HTTP on loopback. A stand-in for Redis so that the example needs nothing
// but Node.js; README.md says what Redis would do in its place.
//
//   POST /incr/KEY   -> the new value (INCR KEY)
//   GET  /get/KEY    -> the value, 404 if none (GET KEY)
//   GET  /healthz    -> ok
//
// Run: STORE_PORT=4100 node store.js
"use strict";
const http = require("http");

const PORT = Number(process.env.STORE_PORT || 4100);
// The oldest keys go first past this many, as Redis would expire them.
const MAX_KEYS = 100000;

const counters = new Map();

function incr(key) {
  const value = (counters.get(key) || 0) + 1;
  counters.delete(key); // re-inserted last: the Map keeps keys oldest first
  counters.set(key, value);
  if (counters.size > MAX_KEYS) {
    counters.delete(counters.keys().next().value);
  }
  return value;
}

const server = http.createServer((req, res) => {
  const [, verb, ...rest] = req.url.split("/");
  const key = decodeURIComponent(rest.join("/"));
  let status = 200;
  let body;
  if (req.method === "POST" && verb === "incr" && key) {
    body = String(incr(key));
  } else if (req.method === "GET" && verb === "get" && counters.has(key)) {
    body = String(counters.get(key));
  } else if (req.method === "GET" && verb === "healthz") {
    body = "ok";
  } else {
    status = 404;
    body = "not found";
  }
  res.writeHead(status, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
  req.resume();
});

// The app processes keep connections to the store open; longer than
// their own idle time, so the store never closes one they are about to use.
server.keepAliveTimeout = 65000;
server.listen(PORT, "127.0.0.1", () => console.log(`store listening on 127.0.0.1:${PORT}`));

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
