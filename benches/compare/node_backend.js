// A Node.js backend for compare.sh's crash-loop scenario: answers every
// request with 200 and its name, on 127.0.0.1:PORT.
//
//     node node_backend.js PORT NAME
"use strict";
const http = require("http");

const [port, name] = process.argv.slice(2);
const body = `${name}\n`;
http
  .createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
    res.end(body);
  })
  .listen(Number(port), "127.0.0.1");
