// Socket.IO clients through a proxy:
// `node client.js URL [CLIENTS [MESSAGES [TIMEOUT_MS]]]`.
//
// Each client starts on long-polling (Socket.IO's default), waits for the
// upgrade to a WebSocket, sends MESSAGES echoes and checks that one server
// answered them all, then disconnects. It keeps cookies (withCredentials),
// as a browser does, so a sticky cookie can pin it. Prints one JSON line:
// how many connected, upgraded and echoed, which servers answered each
// client, and every error seen.
"use strict";
const { io } = require("socket.io-client");

const [url, clients = "50", messages = "5", timeout = "10000"] = process.argv.slice(2);
const TIMEOUT_MS = Number(timeout);

function one(i) {
  return new Promise((resolve) => {
    const result = { connected: false, upgraded: false, echoed: 0, servers: [], errors: [] };
    const socket = io(url, {
      transports: ["polling", "websocket"],
      withCredentials: true,
      reconnection: false,
      timeout: TIMEOUT_MS,
    });
    const done = () => {
      clearTimeout(timer);
      socket.close();
      resolve(result);
    };
    const timer = setTimeout(() => {
      result.errors.push("timed out");
      done();
    }, TIMEOUT_MS);
    socket.on("connect_error", (err) => {
      result.errors.push(`connect_error: ${err.message}`);
      done();
    });
    socket.on("disconnect", (reason) => {
      if (reason !== "io client disconnect") result.errors.push(`disconnect: ${reason}`);
    });
    socket.on("connect", () => {
      result.connected = true;
      const engine = socket.io.engine;
      const send = async () => {
        for (let m = 0; m < Number(messages); m++) {
          try {
            const reply = await socket.timeout(TIMEOUT_MS).emitWithAck("echo", `${i}-${m}`);
            if (reply.msg === `${i}-${m}`) result.echoed++;
            if (!result.servers.includes(reply.from)) result.servers.push(reply.from);
          } catch (e) {
            result.errors.push(`echo: ${e.message}`);
          }
        }
        done();
      };
      if (engine.transport.name === "websocket") {
        result.upgraded = true;
        send();
      } else {
        engine.once("upgrade", () => {
          result.upgraded = true;
          send();
        });
        engine.once("upgradeError", (err) => {
          result.errors.push(`upgrade: ${err.message}`);
          send();
        });
      }
    });
  });
}

(async () => {
  const results = await Promise.all(Array.from({ length: Number(clients) }, (_, i) => one(i)));
  const summary = {
    clients: results.length,
    connected: results.filter((r) => r.connected).length,
    upgraded: results.filter((r) => r.upgraded).length,
    echoed: results.reduce((n, r) => n + r.echoed, 0),
    most_servers_per_client: Math.max(0, ...results.map((r) => r.servers.length)),
    errors: results.flatMap((r) => r.errors),
  };
  console.log(JSON.stringify(summary));
  process.exit(0);
})();
