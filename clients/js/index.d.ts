// Types of clarion-resume (index.mjs). Structural, so that it needs no pusher-js types: any
// pusher-js 7 or 8 instance (new Pusher(...), echo.connector.pusher) fits.

export interface ResumeOptions {
  /** Which channels resume (default: all of them). The others subscribe as plain Pusher. */
  only?: (channelName: string) => boolean;
}

/** What enableResume needs of a pusher-js instance. */
export interface PusherLike {
  connection: {
    state: string;
    socket_id?: string;
    bind(event: string, callback: (...args: any[]) => void): unknown;
  };
  send_event(event: string, data: any, channel?: string): boolean;
  unsubscribe(channelName: string): void;
  channel(channelName: string): unknown;
}

/** The payload of the `clarion:resume_failed` event bound with `channel.bind`. */
export interface ResumeFailed {
  /**
   * "expired": the missed events are older than the server keeps; "reset": its log was lost;
   * "unavailable": the server could not read its log in the middle of a long replay.
   */
  reason: "expired" | "reset" | "unavailable";
  /** The last serial the client had on the channel (after a partial replay: the last sent;
   *  while connected: the last it received). */
  serial: number;
}

/** Turns resume on for this pusher-js instance and returns it. Call it before subscribing. */
export declare function enableResume<P extends PusherLike>(pusher: P, options?: ResumeOptions): P;

/** The last serial received on the channel by this instance (undefined: none yet). */
export declare function lastSerial(pusher: PusherLike, channelName: string): number | undefined;
