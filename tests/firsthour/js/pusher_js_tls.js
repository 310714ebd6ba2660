// pusher-js (its Node build) with forceTLS: connects to wss://127.0.0.1:$WSS_PORT, subscribes
// to $CHANNEL and prints what it sees as JSON lines. The test CA comes from NODE_EXTRA_CA_CERTS.
const Pusher = require("pusher-js");

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const pusher = new Pusher(process.env.KEY, {
  wsHost: "127.0.0.1", wssPort: Number(process.env.WSS_PORT), forceTLS: true,
  enabledTransports: ["ws"], cluster: "mt1", disableStats: true,
});
pusher.connection.bind("state_change", (s) => out({ kind: "state", state: s.current }));
pusher.connection.bind("error", (e) => out({ kind: "error", error: String(e && e.error && e.error.type) }));
const channel = pusher.subscribe(process.env.CHANNEL);
channel.bind("pusher:subscription_succeeded", () => out({ kind: "subscribed" }));
channel.bind_global((event, data) => {
  if (!event.startsWith("pusher:")) out({ kind: "event", event, data });
});
setTimeout(() => process.exit(3), 60000);
