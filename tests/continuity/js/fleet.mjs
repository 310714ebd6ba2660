// Many real pusher-js 8 / Laravel Echo 2 clients in one Node process, driven by
// tests/continuity (continuity_harness.Fleet): commands on stdin, one JSON line per answer.
//
// env: NODE_MODULES (pusher-js, laravel-echo), EXTENSION (clients/js/index.cjs), KEY, SECRET,
//      WS_PORT, COUNT, FLAVOR ("pusher", "echo" or "mixed": every other client through Echo),
//      RESUME ("1": enableResume on every client), USERS (JSON list of presence user ids).
import crypto from "node:crypto";
import { createRequire } from "node:module";
import { join } from "node:path";
import readline from "node:readline";
import { pathToFileURL } from "node:url";

const env = process.env;
const require = createRequire(join(env.NODE_MODULES, "..", "fleet.cjs"));
const Pusher = require("pusher-js");
const { default: Echo } = await import(
  pathToFileURL(join(env.NODE_MODULES, "laravel-echo", "dist", "echo.js")).href);
const { enableResume, lastSerial } = require(env.EXTENSION);

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sign = (s) => crypto.createHmac("sha256", env.SECRET).update(s).digest("hex");
const count = Number(env.COUNT || 1);
const users = env.USERS ? JSON.parse(env.USERS) : [];

function options(userId) {
  return {
    wsHost: "127.0.0.1", wsPort: Number(env.WS_PORT), forceTLS: false,
    enabledTransports: ["ws"], cluster: "mt1", disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        if (!channelName.startsWith("presence-")) {
          return callback(null, { auth: `${env.KEY}:${sign(`${socketId}:${channelName}`)}` });
        }
        const channelData = JSON.stringify({ user_id: userId, user_info: { name: userId } });
        callback(null, { auth: `${env.KEY}:${sign(`${socketId}:${channelName}:${channelData}`)}`,
                         channel_data: channelData });
      },
    },
  };
}

/** One client and what it observed. */
class Client {
  constructor(i) {
    this.userId = users[i] || `user${i}`;
    this.flavor = env.FLAVOR === "mixed" ? (i % 2 ? "echo" : "pusher") : env.FLAVOR || "pusher";
    if (this.flavor === "echo") {
      this.echo = new Echo({ broadcaster: "pusher", key: env.KEY, Pusher, ...options(this.userId) });
      this.pusher = this.echo.connector.pusher;
    } else {
      this.pusher = new Pusher(env.KEY, options(this.userId));
    }
    if (env.RESUME === "1") enableResume(this.pusher);
    this.socketIds = [];
    this.received = {}; // channel -> numbers of the "seq" events, in arrival order
    this.failed = {}; // channel -> clarion:resume_failed payloads
    this.subscribed = {}; // channel -> subscription_succeeded count
    this.joined = {}; // channel -> member ids at the last subscription_succeeded
    this.members = {}; // channel -> member ids now (joined, then member events)
    this.rawFrames = 0;
    this.rawWithSerial = 0; // frames carrying a top-level serial, as the wire had them
    this.codes = []; // codes of the pusher:error frames received (4200: reconnect now)
    this.pusher.connection.bind("error", (err) => {
      if (err && err.type === "PusherError" && err.data) this.codes.push(err.data.code);
    });
    this.pusher.connection.bind("state_change", ({ current }) => {
      if (current !== "connected") return;
      this.socketIds.push(this.pusher.connection.socket_id);
      this.pusher.connection.connection.transport.bind_global((name, message) => {
        if (name !== "message") return;
        this.rawFrames += 1;
        if ("serial" in JSON.parse(message.data)) this.rawWithSerial += 1;
      });
    });
  }

  subscribe(name) {
    this.received[name] = [];
    this.failed[name] = [];
    this.subscribed[name] = 0;
    const onSeq = (data) => this.received[name].push(data.n);
    const onFailed = (data) => this.failed[name].push(data);
    const onMembers = (ids) => {
      this.subscribed[name] += 1;
      if (ids) this.joined[name] = ids.sort();
      if (ids) this.members[name] = new Set(ids);
    };
    const onJoin = (id) => this.members[name].add(id);
    const onLeave = (id) => this.members[name].delete(id);
    if (this.flavor === "echo") {
      let channel;
      if (name.startsWith("presence-")) {
        channel = this.echo.join(name.slice("presence-".length))
          .here((members) => onMembers(members.map((m) => m.name)))
          .joining((m) => onJoin(m.name))
          .leaving((m) => onLeave(m.name));
      } else {
        channel = name.startsWith("private-") ? this.echo.private(name.slice("private-".length))
          : this.echo.channel(name);
        channel.subscribed(() => onMembers(null));
      }
      // Echo namespaces event names; a leading dot means "as the server names it".
      channel.listen(".seq", onSeq).listen(".clarion:resume_failed", onFailed);
    } else {
      const channel = this.pusher.subscribe(name);
      channel.bind("seq", onSeq);
      channel.bind("clarion:resume_failed", onFailed);
      channel.bind("pusher:member_added", (m) => onJoin(m.id));
      channel.bind("pusher:member_removed", (m) => onLeave(m.id));
      channel.bind("pusher:subscription_succeeded", (members) => {
        const ids = [];
        if (members && members.each) members.each((m) => ids.push(m.id));
        onMembers(members && members.each ? ids : null);
      });
    }
  }

  unsubscribe(name) {
    if (this.flavor === "echo") this.echo.leaveChannel(name);
    else this.pusher.unsubscribe(name);
  }

  report() {
    const serials = {};
    for (const name of Object.keys(this.received)) serials[name] = lastSerial(this.pusher, name);
    return { user: this.userId, flavor: this.flavor, state: this.pusher.connection.state,
             socket_ids: this.socketIds, received: this.received, failed: this.failed,
             subscribed: this.subscribed, joined: this.joined, serials,
             members: Object.fromEntries(Object.entries(this.members)
               .map(([name, ids]) => [name, [...ids].sort()])),
             raw_frames: this.rawFrames, raw_with_serial: this.rawWithSerial,
             codes: this.codes };
  }
}

const clients = Array.from({ length: count }, (_, i) => new Client(i));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === "subscribe") {
    // cmd.channels: one list for every client, or one list per client.
    clients.forEach((c, i) => {
      const names = Array.isArray(cmd.channels[0]) ? cmd.channels[i] : cmd.channels;
      names.forEach((name) => c.subscribe(name));
    });
    out({ kind: "ok" });
  } else if (cmd.op === "unsubscribe") {
    clients.forEach((c) => c.unsubscribe(cmd.channel));
    out({ kind: "ok" });
  } else if (cmd.op === "status") {
    // Cheap enough to poll: how many are connected, and the fewest subscriptions any
    // channel of any client has succeeded.
    const counts = clients.flatMap((c) => Object.values(c.subscribed));
    out({ kind: "status",
          connected: clients.filter((c) => c.pusher.connection.state === "connected").length,
          min_subscribed: counts.length ? Math.min(...counts) : 0,
          received: clients.map((c) => Object.values(c.received)
            .reduce((sum, ns) => sum + ns.length, 0)) });
  } else if (cmd.op === "report") {
    out({ kind: "report", clients: clients.map((c) => c.report()) });
  } else if (cmd.op === "quit") {
    clients.forEach((c) => c.pusher.disconnect());
    process.exit(0);
  }
});
out({ kind: "ready" });
