// The Socket.IO peer of bench/realtime/run: the same work sessiond's realtime hub does for the
// three benchmark scenarios, written the way a Socket.IO app would write it.
//
//   node socketio-server.mjs PORT      (SIO_NODE_MODULES = the folder holding node_modules)
//
// Prints "listening <port>" once it accepts connections. GET /healthz, GET /stats ({connections}).
//
// Semantics mirrored from sessiond (docs/realtime.md):
// - every socket names its user and device in the handshake query (?userId=&deviceId=) and
//   joins the room `user:<userId>` (all the user's devices, like sessiond's per-user registry);
//   the user's state (presence, lastActive, activeGames) lives in a Map for as long as the
//   process runs (sessiond persists it; Socket.IO apps usually keep it in memory);
// - `?proto=seed` sockets get an `initial_state` event on connect (sessiond's seed protocol
//   sends one); the others get only Socket.IO's connect acknowledgement (like sessiond's v1
//   `connected` frame);
// - `subscribe` {channel} joins a room (ack {channel, offset});
// - `publish` {channel, data} broadcasts `message` {channel, offset, data, from, ts} to every
//   socket of the room, the publisher included when it joined, with a per-room offset (ack
//   {channel, offset});
// - `update_presence` {presence} validates, stores and broadcasts `presence_updated`
//   {presence} to every socket of the user, the sender included.
// Transport: WebSocket only (no long-polling), no compression, the default 25 s ping.
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: node socketio-server.mjs PORT");
  process.exit(2);
}
const modDir = process.env.SIO_NODE_MODULES ?? new URL(".", import.meta.url).pathname;
const require = createRequire(pathToFileURL(modDir + "/").href);
const { Server } = require("socket.io");

const PRESENCE = new Set(["online", "away", "offline"]);
const users = new Map(); // userId -> { presence, lastActive, activeGames }
const offsets = new Map(); // room -> last offset

// `/healthz` for the start-up wait, `/stats` for the bench script's "sockets gone" wait.
const http = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok");
  } else if (req.url === "/stats") {
    res.writeHead(200, { "content-type": "application/json" })
      .end(JSON.stringify({ connections: io.engine.clientsCount }));
  } else {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
  }
});
const io = new Server(http, {
  transports: ["websocket"],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 16 * 1024,
});

function userState(userId) {
  let state = users.get(userId);
  if (!state) {
    state = { presence: "offline", lastActive: null, activeGames: [] };
    users.set(userId, state);
  }
  return state;
}

io.on("connection", (socket) => {
  const { userId, deviceId = "unknown", proto } = socket.handshake.query;
  if (typeof userId !== "string" || userId === "") {
    socket.disconnect(true);
    return;
  }
  // Socket.IO's memory-usage guide: drop the reference to the first HTTP request once the
  // handshake data was read, so an idle socket does not keep it alive.
  socket.conn.request = null;
  const userRoom = `user:${userId}`;
  socket.join(userRoom);
  const state = userState(userId);
  if (state.presence !== "online") {
    state.presence = "online";
    state.lastActive = Date.now();
  }
  if (proto === "seed") {
    socket.emit("initial_state", { userId, ...state, deviceId });
  }

  socket.on("subscribe", (msg, ack) => {
    if (typeof msg?.channel !== "string") return;
    socket.join(msg.channel);
    if (typeof ack === "function") ack({ channel: msg.channel, offset: offsets.get(msg.channel) ?? 0 });
  });

  socket.on("publish", (msg, ack) => {
    if (typeof msg?.channel !== "string" || !socket.rooms.has(msg.channel)) return;
    const offset = (offsets.get(msg.channel) ?? 0) + 1;
    offsets.set(msg.channel, offset);
    io.to(msg.channel).emit("message", {
      channel: msg.channel, offset, data: msg.data ?? null, from: userId, ts: Date.now(),
    });
    if (typeof ack === "function") ack({ channel: msg.channel, offset });
  });

  socket.on("update_presence", (msg) => {
    if (!PRESENCE.has(msg?.presence)) {
      socket.emit("error_message", { message: "presence must be one of online, away, offline" });
      return;
    }
    state.presence = msg.presence;
    state.lastActive = Date.now();
    io.to(userRoom).emit("presence_updated", { presence: msg.presence });
  });

  socket.on("disconnect", () => {
    if ((io.sockets.adapter.rooms.get(userRoom)?.size ?? 0) === 0) {
      state.presence = "offline";
      state.lastActive = Date.now();
    }
  });
});

http.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
const stop = () => io.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
