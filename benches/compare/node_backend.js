// A Node.js backend for compare.sh's crash-loop scenario and drain.sh:
// answers every request with 200 and its name, on 127.0.0.1:PORT, after
// DELAY_MS milliseconds (0 by default), having read the request's body.
//
//     node node_backend.js PORT NAME [DELAY_MS]
"use strict";
const http = require("http");

const [port, name, delay] = process.argv.slice(2);
const body = `${name}\n`;
const delayMs = Number(delay || 0);
const answer = (res) => {
  res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
  res.end(body);
};
http
  .createServer((req, res) => {
    req.resume();
    req.on("end", () => (delayMs > 0 ? setTimeout(answer, delayMs, res) : answer(res)));
  })
  .listen(Number(port), "127.0.0.1");
