// Type declarations for wshub-client.

export type State = 'disconnected' | 'connecting' | 'connected';

export type ErrorCode =
  | 'ENOTCONNECTED' // a request made while not connected
  | 'EDISCONNECTED' // the connection went away before the reply
  | 'ECLOSED' // close() was called
  | 'ETIMEDOUT' // no reply within requestTimeout
  | 'ELIMIT' // a bound was reached (maxPending, maxSubscriptions, maxBufferedBytes)
  | 'ESERVER' // an `error` reply from the server (`reply` holds it)
  | 'EUNSUBSCRIBED' // the subscription ended before it was confirmed
  | 'ETOKEN' // getToken failed or gave no newer token
  | 'ESOCKET' // the WebSocket constructor threw
  | 'EPROTO' // an unparsable frame from the server
  | 'ELISTENER'; // a listener or message handler threw (`cause` holds it)

export class WshubError extends Error {
  name: 'WshubError';
  code: ErrorCode;
  /** The server's `error` reply, for code ESERVER. */
  reply?: { type: 'error'; id?: number; error: string; [k: string]: unknown };
  channel?: string;
  closeCode?: number;
  cause?: unknown;
}

export interface Position {
  offset: number;
  epoch: string;
}

export interface TokenContext {
  /** 'connect': first connection; 'reconnect': after a loss; 'expired': after a 4001 close; 'refresh': before `exp`. */
  reason: 'connect' | 'reconnect' | 'expired' | 'refresh';
}

/** The minimal WebSocket the client needs (the browser's, Node's global, or the `ws` package's). */
export interface WebSocketLike {
  readonly bufferedAmount: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface Options {
  /** WebSocket constructor; default globalThis.WebSocket. */
  WebSocket?: new (url: string) => WebSocketLike;
  /** Called before every connection attempt (token sent as `?token=`) and before `exp` to refresh. null/undefined: no token. */
  getToken?: (ctx: TokenContext) => string | null | undefined | Promise<string | null | undefined>;
  /** Backoff cap of the first reconnect, ms (500). Delay = random() * min(maxDelay, initialDelay * factor^attempt). */
  initialDelay?: number;
  /** Largest backoff cap, ms (30000). */
  maxDelay?: number;
  /** Cap multiplier per failed attempt (2). */
  factor?: number;
  /** A connection open this long (ms) resets the backoff (5000). */
  stableAfter?: number;
  /** ms for a socket to open before the attempt counts as failed; 0: none (10000). */
  connectTimeout?: number;
  /** ms to wait for a publish/unsubscribe/refresh reply; 0: none (30000). */
  requestTimeout?: number;
  /** Refresh this many ms before `exp`, at most half the token's remaining lifetime (30000). */
  refreshBefore?: number;
  /** Publishes awaiting a reply; past it publish() rejects with ELIMIT (1000). */
  maxPending?: number;
  /** Registered channels; past it subscribe() rejects with ELIMIT (10000). */
  maxSubscriptions?: number;
  /** Socket bufferedAmount past which publish() rejects with ELIMIT (4 MiB). */
  maxBufferedBytes?: number;
  /** Reconnect after a loss (true). */
  reconnect?: boolean;
  /** Injectable time sources (tests). */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
  random?: () => number;
  now?: () => number;
}

export interface SubscribedInfo {
  channel: string;
  /** The position after the reply, on a history channel; else null. */
  offset: number | null;
  epoch: string | null;
  /** The server's `recovered` flag when present. */
  recovered?: boolean;
  /** True when this reply re-established a subscription after a reconnect. */
  resubscribe: boolean;
}

export interface MessageMeta {
  channel: string;
  /** The message's offset on a history channel. */
  offset?: number;
}

export interface PublishedReply {
  type: 'published';
  channel: string;
  id: number;
  offset?: number;
  [k: string]: unknown;
}

export interface GapEvent {
  channel: string;
  /** Where delivery continues from (the next message is offset + 1); null when the channel lost its history. */
  offset: number | null;
  epoch: string | null;
  /** The client's position before the gap. */
  previous: Position | null;
  /** false when the gap is a `subscribed` reply with "recovered":false; absent for a `gap` frame. */
  recovered?: false;
}

export interface Events {
  connecting: { attempt: number };
  connected: { url: string };
  disconnected: { code: number; reason: string; wasConnected?: boolean; willReconnect: boolean; delay?: number };
  message: { channel: string; data: unknown; offset?: number };
  gap: GapEvent;
  subscribed: SubscribedInfo;
  unsubscribed: { channel: string; reason: string };
  refreshed: { exp: number | null };
  error: WshubError;
}

export type MessageHandler = (data: any, meta: MessageMeta) => void;

export class WshubClient {
  constructor(url: string, options?: Options);
  readonly url: string;
  readonly state: State;
  /** Resolves once connected; keeps reconnecting with backoff until close(). */
  connect(): Promise<void>;
  /** Closes and stops reconnecting; subscriptions stay registered for a later connect(). */
  close(): void;
  /** Registers a handler; resolves on the `subscribed` reply, rejects on an `error` reply. Re-established after every reconnect, with `since` recovery on history channels. */
  subscribe(channel: string, onMessage?: MessageHandler): Promise<SubscribedInfo>;
  /** Removes `onMessage` (or every handler); unsubscribes from the server when none is left. */
  unsubscribe(channel: string, onMessage?: MessageHandler): Promise<void>;
  /** Rejects at once (ENOTCONNECTED) while not connected: nothing is queued. */
  publish(channel: string, data: unknown): Promise<PublishedReply>;
  /** The last offset and epoch seen on a channel, or null. */
  position(channel: string): Position | null;
  on<K extends keyof Events>(event: K, fn: (ev: Events[K]) => void): () => void;
  off<K extends keyof Events>(event: K, fn: (ev: Events[K]) => void): void;
}

/** The `exp` claim of a JWT, decoded without verifying; null if none. */
export function tokenExp(token: string): number | null;
/** Full-jitter backoff delay for a 0-based attempt. */
export function backoffDelay(attempt: number, initial: number, max: number, factor: number, random?: () => number): number;

export default WshubClient;
