// Resume after reconnect for pusher-js 7 and 8 against Clarion (and Laravel Echo, through
// echo.connector.pusher). The wire protocol is Clarion's docs/resume.md, version 1.
//
// pusher-js is not forked or patched globally: enableResume() wraps three things on one
// instance, all of them part of how pusher-js works since version 7:
//   - pusher.send_event: every pusher:subscribe, including the ones pusher-js sends again by
//     itself after a reconnect (subscribeAll on "connected"), goes through it; the position
//     is added there;
//   - pusher.unsubscribe: the app leaving a channel forgets its position;
//   - the transport of each new connection: pusher-js decodes frames into
//     {event, channel, data, user_id} and drops the top-level `serial`, so the raw frame is
//     read before pusher-js dispatches it (a transport's global listeners run before its
//     named ones, so the position is recorded before any app callback runs).

const VERSION = 1;
const STATE = Symbol.for("clarion.resume");

/**
 * Turn resume on for one pusher-js instance; returns it. Call it before subscribing: a
 * subscription made before asks for no position until it is made again.
 */
export function enableResume(pusher, options = {}) {
  if (pusher[STATE]) return pusher;
  const only = options.only || (() => true);
  const state = { serials: new Map(), socketId: null, previousSocketId: null };
  Object.defineProperty(pusher, STATE, { value: state });

  // "#server-to-user-..." (user sign-in) is pusher-js's own channel, not the app's.
  const wanted = (name) => typeof name === "string" && name[0] !== "#" && only(name);

  const sendEvent = pusher.send_event;
  pusher.send_event = function (name, data, channel) {
    if (name === "pusher:subscribe" && data && wanted(data.channel)) {
      data = { ...data, clarion: position(state, data.channel) };
    }
    return sendEvent.call(this, name, data, channel);
  };

  const unsubscribe = pusher.unsubscribe;
  pusher.unsubscribe = function (name) {
    const result = unsubscribe.apply(this, arguments);
    // A subscription still pending is only cancelled: pusher-js unsubscribes again (through
    // this wrapper) once it succeeds, and the position is forgotten then.
    if (!this.channel(name)) state.serials.delete(name);
    return result;
  };

  const onFrame = (eventName, message) => {
    if (eventName !== "message" || !message || typeof message.data !== "string") return;
    if (message.data.indexOf("serial") === -1) return; // most frames: no second parse
    let frame;
    try {
      frame = JSON.parse(message.data);
    } catch {
      return; // pusher-js reports the broken frame itself
    }
    const name = frame.channel;
    const channel = typeof name === "string" ? pusher.channel(name) : undefined;
    if (!channel || !wanted(name)) return; // left meanwhile, or not ours
    if (typeof frame.serial === "number") state.serials.set(name, frame.serial);
    if (frame.event === "clarion:resume_failed" && name.startsWith("private-encrypted-")) {
      // pusher-js would try to decrypt it and drop it: hand it to the app here instead.
      channel.emit(frame.event, parse(frame.data));
    }
  };

  // state_change is emitted just before "connected", so before pusher-js resubscribes.
  const attach = () => {
    state.previousSocketId = state.socketId;
    state.socketId = pusher.connection.socket_id;
    const transport = pusher.connection.connection && pusher.connection.connection.transport;
    if (transport) transport.bind_global(onFrame);
  };
  pusher.connection.bind("state_change", ({ current }) => {
    if (current === "connected") attach();
  });
  if (pusher.connection.state === "connected") attach();
  return pusher;
}

/** The last serial received on a channel of a pusher-js instance, if any. */
export function lastSerial(pusher, channelName) {
  const state = pusher[STATE];
  return state ? state.serials.get(channelName) : undefined;
}

function position(state, name) {
  const serial = state.serials.get(name);
  if (serial === undefined) return { v: VERSION }; // a fresh subscription that wants positions
  const clarion = { v: VERSION, serial };
  // Events the app published excluding the previous connection must not come back to it.
  if (state.previousSocketId) clarion.socket_id = state.previousSocketId;
  return clarion;
}

function parse(data) {
  if (typeof data !== "string") return data;
  try {
    return JSON.parse(data);
  } catch {
    return data;
  }
}
