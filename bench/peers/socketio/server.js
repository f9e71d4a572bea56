// The Socket.IO peer of herald-bench's open-loop benchmark: what a platform team would run instead of
// Herald, kept as lean as Herald's own path (raw `http` server, no framework, no per-message logging).
//
// - Listens on env HERALD_LISTEN (`host:port`, port 0 = any free port) and prints one line,
//   `INFO gateway:listening address=http://host:port`, once it accepts connections (the line
//   herald_e2e::GatewayProcess waits for).
// - Socket.IO over the WebSocket transport only; a client's user id is the handshake query's `userId`
//   and the socket joins the room of that name.
// - `POST /publish` `{"userIds": ["...", ...], "notification": {...}}` emits `notification` to those
//   rooms (one emit for all of them, as Socket.IO allows) and answers 202. Nothing is stored and nothing is acknowledged: clients' `ack` events are ignored.
// - With env REDIS_URL, rooms span every node through @socket.io/redis-adapter: a publish to one node
//   reaches the user's sockets on the others.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const MAX_BODY_BYTES = 64 * 1024;

function listenAddress() {
  const value = process.env.HERALD_LISTEN || "127.0.0.1:0";
  const colon = value.lastIndexOf(":");
  if (colon < 0) {
    throw new Error(`HERALD_LISTEN must be host:port, got ${value}`);
  }
  const host = value.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  const port = Number(value.slice(colon + 1));
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`HERALD_LISTEN has no valid port: ${value}`);
  }
  return { host, port };
}

function answer(res, status) {
  res.writeHead(status, { "content-length": "0" });
  res.end();
}

// Requests Socket.IO does not claim (anything outside /socket.io/).
function handleRequest(io, req, res) {
  if (req.url !== "/publish") {
    return answer(res, 404);
  }
  if (req.method !== "POST") {
    return answer(res, 405);
  }
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      answer(res, 413);
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on("end", () => {
    if (res.headersSent) {
      return;
    }
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      return answer(res, 400);
    }
    const userIds = body && body.userIds;
    const notification = body && body.notification;
    const validUsers =
      Array.isArray(userIds) &&
      userIds.length > 0 &&
      userIds.length <= 1000 &&
      userIds.every((id) => typeof id === "string" && id !== "");
    if (!validUsers || typeof notification !== "object" || notification === null) {
      return answer(res, 400);
    }
    io.to(userIds).emit("notification", notification);
    answer(res, 202);
  });
}

async function useRedisAdapter(io, url) {
  const { createClient } = require("redis");
  const { createAdapter } = require("@socket.io/redis-adapter");
  const pubClient = createClient({ url });
  const subClient = pubClient.duplicate();
  for (const [name, client] of [
    ["pub", pubClient],
    ["sub", subClient],
  ]) {
    client.on("error", (error) => console.error(`WARN redis ${name} client: ${error.message}`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);
  io.adapter(createAdapter(pubClient, subClient));
  // The adapter subscribes without waiting for Redis to confirm. Replies on one connection come in
  // order, so once this later subscription is confirmed the adapter's are too: no publish from another
  // node can be missed after this node says it is listening.
  const barrier = `herald-bench#barrier#${process.pid}`;
  await subClient.subscribe(barrier, () => {});
  await subClient.unsubscribe(barrier);
}

async function main() {
  const { host, port } = listenAddress();
  // The handler sees only what Socket.IO leaves (it takes /socket.io/ for itself).
  const httpServer = http.createServer((req, res) => handleRequest(io, req, res));
  // Longer than the benchmark client's idle keep-alive (reqwest: 90 s), so the server never closes a
  // connection the client is about to reuse.
  httpServer.keepAliveTimeout = 120_000;
  const io = new Server(httpServer, {
    transports: ["websocket"],
    serveClient: false,
  });
  if (process.env.REDIS_URL) {
    await useRedisAdapter(io, process.env.REDIS_URL);
  }
  io.on("connection", (socket) => {
    const userId = socket.handshake.query.userId;
    if (typeof userId !== "string" || userId === "") {
      socket.disconnect(true);
      return;
    }
    // Socket.IO writes the client's CONNECT answer (`40{...}`) and then runs this handler in the same
    // tick, and the join is synchronous (also with the Redis adapter, whose subscription covers every
    // room): no publish can be handled between the two, so a client that has read its `40` is in its
    // room.
    socket.join(userId);
    // Peers neither persist nor acknowledge; clients send `ack` anyway so the wire work is comparable.
    socket.on("ack", () => {});
  });
  await new Promise((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(port, host, resolve);
  });
  const address = httpServer.address();
  const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
  console.log(`INFO gateway:listening address=http://${shown}:${address.port}`);
}

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}

main().catch((error) => {
  console.error(`ERROR socket.io peer failed to start: ${error.stack || error}`);
  process.exit(1);
});
