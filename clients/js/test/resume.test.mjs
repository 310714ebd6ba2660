// The extension on a real pusher-js instance (the Node build of the npm package), against a
// scripted server (pusher_server.mjs) that plays docs/resume.md frame by frame.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { after, before, test } from "node:test";

import { startServer } from "./pusher_server.mjs";
import { enableResume, lastSerial } from "../index.mjs";

const require = createRequire(import.meta.url);
const Pusher = require("pusher-js");

let server;
const clients = [];
before(async () => {
  server = await startServer();
});
after(() => {
  clients.forEach((p) => p.disconnect());
  server.close();
});

/** A pusher-js client of the scripted server, and the server's side of its connection. */
async function connect({ resume = true, options } = {}) {
  const pusher = new Pusher("key", {
    wsHost: "127.0.0.1", wsPort: server.port, forceTLS: false, enabledTransports: ["ws"],
    cluster: "mt1", disableStats: true,
    channelAuthorization: { customHandler: (_params, callback) =>
      callback(null, { auth: "key:signature", shared_secret: SHARED_SECRET }) },
  });
  clients.push(pusher);
  if (resume) enableResume(pusher, options);
  const conn = await server.connection(server.connections.length);
  await new Promise((ok) => pusher.connection.bind("connected", ok));
  return { pusher, conn };
}

const SHARED_SECRET = Buffer.alloc(32, 7).toString("base64");
const succeeded = (channel, serial) => ({ event: "pusher_internal:subscription_succeeded",
  channel, data: "{}", ...(serial === undefined ? {} : { serial }) });
const event = (channel, n, serial) => ({ event: "tick", channel, data: JSON.stringify({ n }),
  serial });
const received = (channel) => {
  const got = [];
  channel.bind("tick", (data) => got.push(data.n));
  return got;
};
const until = async (check, what, timeoutMs = 5000) => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((wake) => setTimeout(wake, 10));
  }
};

test("a first subscription asks for positions, with no serial", async () => {
  const { pusher, conn } = await connect();
  pusher.subscribe("news");
  pusher.subscribe("private-orders");
  assert.deepEqual((await conn.subscribeOf("news")).data,
    { auth: "", channel: "news", clarion: { v: 1 } });
  const priv = (await conn.subscribeOf("private-orders")).data;
  assert.equal(priv.auth, "key:signature");
  assert.deepEqual(priv.clarion, { v: 1 });
});

test("without enableResume pusher-js sends plain Pusher subscriptions", async () => {
  const { pusher, conn } = await connect({ resume: false });
  pusher.subscribe("news");
  assert.deepEqual((await conn.subscribeOf("news")).data, { auth: "", channel: "news" });
});

test("after a reconnect it resumes from the last serial, with the previous socket id", async () => {
  const { pusher, conn } = await connect();
  const channel = pusher.subscribe("news");
  const got = received(channel);
  await conn.subscribeOf("news");
  conn.send(succeeded("news", 100));
  conn.send(event("news", 1, 101));
  conn.send(event("news", 2, 102));
  conn.send({ event: "client-typing", channel: "news", data: "{}" }); // no serial: no change
  await until(() => got.length === 2, "the live events");
  assert.equal(lastSerial(pusher, "news"), 102);

  conn.drop();
  const next = await server.connection(server.connections.indexOf(conn) + 1);
  const again = await next.subscribeOf("news");
  assert.deepEqual(again.data.clarion, { v: 1, serial: 102, socket_id: conn.socketId });
  // The replay: ordinary events that reach the app's ordinary callbacks.
  next.send(succeeded("news", 102));
  next.send(event("news", 3, 103));
  next.send(event("news", 4, 104));
  await until(() => got.length === 4, "the replayed events");
  assert.deepEqual(got, [1, 2, 3, 4]);
  assert.equal(lastSerial(pusher, "news"), 104);
});

test("a channel the app left is forgotten, even when left while disconnected", async () => {
  const { pusher, conn } = await connect();
  pusher.subscribe("a");
  pusher.subscribe("b");
  await conn.subscribeOf("b");
  conn.send(succeeded("a", 10));
  conn.send(succeeded("b", 20));
  await until(() => lastSerial(pusher, "b") === 20, "the positions");
  pusher.unsubscribe("a");
  await conn.next((m) => m.event === "pusher:unsubscribe");
  assert.equal(lastSerial(pusher, "a"), undefined);

  const whileAway = new Promise((done) => pusher.connection.bind("connecting", () => {
    pusher.unsubscribe("b");
    pusher.subscribe("a");
    pusher.subscribe("b");
    done();
  }));
  conn.drop();
  await whileAway;
  const next = await server.connection(server.connections.indexOf(conn) + 1);
  assert.deepEqual((await next.subscribeOf("a")).data.clarion, { v: 1 });
  assert.deepEqual((await next.subscribeOf("b")).data.clarion, { v: 1 });
});

test("clarion:resume_failed reaches channel.bind, then live events go on", async () => {
  const { pusher, conn } = await connect();
  for (const name of ["news", "private-encrypted-vault"]) {
    const channel = pusher.subscribe(name);
    const failed = [];
    channel.bind("clarion:resume_failed", (data) => failed.push(data));
    await conn.subscribeOf(name);
    conn.send(succeeded(name, 900));
    conn.send({ event: "clarion:resume_failed", channel: name,
      data: JSON.stringify({ reason: "expired", serial: 500 }) });
    await until(() => failed.length === 1, `resume_failed on ${name}`);
    assert.deepEqual(failed, [{ reason: "expired", serial: 500 }]);
    assert.equal(lastSerial(pusher, name), 900); // the position the server gave
  }
});

test("options.only limits resume to some channels", async () => {
  const { pusher, conn } = await connect({ options: { only: (n) => n.startsWith("live-") } });
  pusher.subscribe("live-scores");
  pusher.subscribe("chat");
  assert.deepEqual((await conn.subscribeOf("live-scores")).data.clarion, { v: 1 });
  assert.equal((await conn.subscribeOf("chat")).data.clarion, undefined);
});

test("enabled on a connected instance (as Echo's), twice, it still works once", async () => {
  const { pusher, conn } = await connect({ resume: false });
  enableResume(pusher);
  assert.equal(enableResume(pusher), pusher);
  const got = received(pusher.subscribe("news"));
  assert.deepEqual((await conn.subscribeOf("news")).data.clarion, { v: 1 });
  conn.send(succeeded("news", 7));
  conn.send(event("news", 1, 8));
  await until(() => got.length === 1, "the event");
  assert.equal(lastSerial(pusher, "news"), 8);
  conn.drop();
  const next = await server.connection(server.connections.indexOf(conn) + 1);
  assert.deepEqual((await next.subscribeOf("news")).data.clarion,
    { v: 1, serial: 8, socket_id: conn.socketId });
});

test("the CommonJS entry point is the same module", async () => {
  const cjs = require("../index.cjs");
  assert.deepEqual(Object.keys(cjs).sort(), ["enableResume", "lastSerial"]);
  assert.equal(cjs.enableResume.toString(), enableResume.toString());
});
