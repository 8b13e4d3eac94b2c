// One Socket.IO server process: `node server.js PORT NAME`.
//
// Socket.IO starts every client on HTTP long-polling, a series of requests
// that must all reach the process holding the session, and upgrades it to
// a WebSocket. Behind a balancer without affinity, a poll that lands on
// another process gets "Session ID unknown"; this server prints each such
// error as a line `ERROR <message>`, so that a test can count them.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const [port, name] = process.argv.slice(2);
const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.end("ok\n");
  } else {
    res.writeHead(404);
    res.end();
  }
});
const io = new Server(server);
io.engine.on("connection_error", (err) => {
  console.log(`ERROR ${err.message}`);
});
io.on("connection", (socket) => {
  socket.on("echo", (msg, ack) => ack({ from: name, msg }));
});
server.listen(Number(port), "127.0.0.1", () => console.log(`READY ${name}`));
