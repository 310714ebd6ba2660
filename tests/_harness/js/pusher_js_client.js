// A real pusher-js 8 client (Node build), driven by tests/_harness/node.py's Observer (tests/compat,
// tests/xhr). env: TRANSPORT (ws, the default, xhr_streaming or xhr_polling), PORT (the node's,
// or a load balancer's), KEY, SECRET, USER_ID. Prints one JSON line per thing it observes; reads
// commands on stdin.
const crypto = require("crypto");
const readline = require("readline");
const Pusher = require("pusher-js");

const { KEY, SECRET, PORT, USER_ID, TRANSPORT = "ws" } = process.env;
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sign = (s) => crypto.createHmac("sha256", SECRET).update(s).digest("hex");

const pusher = new Pusher(KEY, {
  // The same host and port for both: the node serves pusher-js's HTTP transports under
  // /pusher (its default httpPath).
  wsHost: "127.0.0.1", wsPort: Number(PORT), httpHost: "127.0.0.1", httpPort: Number(PORT),
  forceTLS: false, enabledTransports: [TRANSPORT], cluster: "mt1", disableStats: true,
  channelAuthorization: {
    customHandler: ({ socketId, channelName }, callback) => {
      if (channelName.startsWith("presence-")) {
        const channelData = JSON.stringify({ user_id: USER_ID, user_info: { name: USER_ID } });
        callback(null, { auth: `${KEY}:${sign(`${socketId}:${channelName}:${channelData}`)}`,
                         channel_data: channelData });
      } else {
        callback(null, { auth: `${KEY}:${sign(`${socketId}:${channelName}`)}` });
      }
    },
  },
  userAuthentication: {
    customHandler: ({ socketId }, callback) => {
      const userData = JSON.stringify({ id: USER_ID });
      callback(null, { auth: `${KEY}:${sign(`${socketId}::user::${userData}`)}`,
                       user_data: userData });
    },
  },
});

const transport = () => pusher.connection.connection?.transport?.name ?? null;
pusher.connection.bind("connected", () => out({
  kind: "connected", socket_id: pusher.connection.socket_id, transport: transport() }));
pusher.connection.bind("state_change", ({ previous, current }) => out({
  kind: "state", previous, current }));
pusher.connection.bind("error", (err) => out({ kind: "error", error: err }));
pusher.bind_global((event, data) => out({ kind: "global", event, data }));
pusher.user.bind("notice", (data) => out({ kind: "user_event", event: "notice", data }));

const channels = {};
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === "subscribe") {
    const ch = pusher.subscribe(cmd.channel);
    channels[cmd.channel] = ch;
    ch.bind("pusher:subscription_succeeded", (members) => out({
      kind: "subscribed", channel: cmd.channel, socket_id: pusher.connection.socket_id,
      members: members && members.count !== undefined ? { count: members.count, me: members.me } : null,
    }));
    ch.bind("pusher:subscription_error", (status) => out({ kind: "subscription_error", channel: cmd.channel, status }));
    ch.bind("pusher:member_added", (m) => out({ kind: "member_added", channel: cmd.channel, id: m.id }));
    ch.bind("pusher:member_removed", (m) => out({ kind: "member_removed", channel: cmd.channel, id: m.id }));
    ch.bind_global((event, data, metadata) => {
      if (!event.startsWith("pusher")) out({ kind: "event", channel: cmd.channel, event, data, metadata });
    });
  } else if (cmd.op === "trigger") {
    out({ kind: "triggered", ok: channels[cmd.channel].trigger(cmd.event, cmd.data) });
  } else if (cmd.op === "signin") {
    pusher.signin();
  } else if (cmd.op === "quit") {
    pusher.disconnect();
    setTimeout(() => process.exit(0), 100);
  }
});
