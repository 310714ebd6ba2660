// A scripted Pusher server for the unit tests: a minimal WebSocket server (RFC 6455, text
// frames) on node:http that answers pusher:connection_established and records every frame a
// client sends, so that a test can play the server's side frame by frame.
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { once } from "node:events";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

export async function startServer() {
  const connections = [];
  const waiters = [];
  const http = createServer();
  http.on("upgrade", (req, socket) => {
    const accept = createHash("sha1").update(req.headers["sec-websocket-key"] + GUID)
      .digest("base64");
    socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
      `Connection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    const conn = new Connection(socket, `${connections.length + 1}.${Date.now() % 100000}`);
    connections.push(conn);
    conn.send({ event: "pusher:connection_established",
      data: JSON.stringify({ socket_id: conn.socketId, activity_timeout: 120 }) });
    waiters.splice(0).forEach((wake) => wake());
  });
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  return {
    port: http.address().port,
    connections,
    /** The n-th connection (0-based), once it is open. */
    async connection(n) {
      while (connections.length <= n) await new Promise((wake) => waiters.push(wake));
      return connections[n];
    },
    close() {
      connections.forEach((c) => c.drop());
      http.close();
    },
  };
}

class Connection {
  constructor(socket, socketId) {
    this.socket = socket;
    this.socketId = socketId;
    this.received = [];
    this.waiters = [];
    let buffer = Buffer.alloc(0);
    socket.on("data", (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      let frame;
      while ((frame = readFrame(buffer))) {
        buffer = buffer.subarray(frame.length);
        if (frame.opcode === 1) this.onMessage(JSON.parse(frame.payload.toString("utf8")));
        else if (frame.opcode === 8) socket.end();
      }
    });
    socket.on("error", () => {});
  }

  onMessage(message) {
    this.received.push(message);
    this.waiters.splice(0).forEach((wake) => wake());
  }

  /** The first frame the client sent matching `match` (waits for it). */
  async next(match, timeoutMs = 3000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find(match);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`not sent: ${JSON.stringify(this.received)}`);
      await new Promise((wake) => {
        this.waiters.push(wake);
        setTimeout(wake, 50);
      });
    }
  }

  subscribeOf(channel) {
    return this.next((m) => m.event === "pusher:subscribe" && m.data.channel === channel);
  }

  send(frame) {
    const payload = Buffer.from(JSON.stringify(frame));
    const head = payload.length < 126 ? Buffer.from([0x81, payload.length])
      : Buffer.from([0x81, 126, payload.length >> 8, payload.length & 255]);
    this.socket.write(Buffer.concat([head, payload]));
  }

  /** The connection lost without a close frame, as when a network or a node goes away. */
  drop() {
    this.socket.destroy();
  }
}

function readFrame(buf) {
  if (buf.length < 2) return null;
  let length = buf[1] & 127;
  let offset = 2;
  if (length === 126) {
    if (buf.length < 4) return null;
    length = buf.readUInt16BE(2);
    offset = 4;
  } else if (length === 127) {
    if (buf.length < 10) return null;
    length = Number(buf.readBigUInt64BE(2));
    offset = 10;
  }
  const masked = (buf[1] & 128) !== 0;
  const start = offset + (masked ? 4 : 0);
  if (buf.length < start + length) return null;
  const payload = Buffer.from(buf.subarray(start, start + length));
  if (masked) for (let i = 0; i < length; i++) payload[i] ^= buf[offset + (i % 4)];
  return { opcode: buf[0] & 15, payload, length: start + length };
}
