import { invalidOption, publish } from '@imgstream/core';
import { systemClock, type Clock } from '../clock.js';
import { K8S_EVENTS_DEFAULTS } from '../defaults.js';
import { dropChannel, eventChannel, retryChannel } from '../diagnostics.js';
import { apiErrorStatus, isRetryableApiError } from '../kube/api-error.js';
import type { CoreV1EventBody, KubeClient } from '../kube/client.js';
import { isDnsLabel, isDnsSubdomain } from '../kube/names.js';
import { backoffDelayMs, type BackoffOptions } from './backoff.js';
import { fallbackMessage, imageStreamingMessage } from './messages.js';
import { EventReason, FALLBACK_TABLE, fallbackReasonForCode, isFallbackReason, type FallbackReason } from './reasons.js';
import { TokenBucket } from './token-bucket.js';

export interface EventReporterOptions {
  /** The Kubernetes API client (see `loadKubeClient()`). Required. */
  client: KubeClient;
  /** Name of this node's Node object, the `involvedObject` of every event (e.g. from the downward API `spec.nodeName`). Required. */
  nodeName: string;
  /** UID of the Node object, when known. When absent it is read once (GET node) before the first write, unless `lookupNodeUid` is false. */
  nodeUid?: string;
  /** Read the Node's UID before the first write when `nodeUid` is not given. Default true. Needs RBAC `get` on nodes. */
  lookupNodeUid?: boolean;
  /** Namespace the events are written to. Default `"default"` (where the kubelet writes node events). */
  namespace?: string;
  /** `source.component` / `reportingComponent` of the events. Default `"imgstreamd"`. */
  component?: string;
  /** Token bucket refill rate for API writes (creates and patches), per second. Default 1. */
  eventsPerSecond?: number;
  /** Token bucket size: writes allowed back to back. Default 25. */
  eventBurst?: number;
  /** Identical events (same type, reason and message) within this window update one Event's `count` (ms). Default 600 000 (10 min). */
  aggregationWindowMs?: number;
  /** Distinct events remembered for aggregation; the least recently seen is forgotten first. Default 4096 (a few hundred bytes each). */
  maxAggregationKeys?: number;
  /** Events waiting to be written; when full the oldest is dropped (diagnostic `imgstream:k8s-events:drop`). Default 1000. */
  maxQueuedEvents?: number;
  /** First retry delay after a failed write (ms); doubles per consecutive failure. Default 500. */
  retryInitialDelayMs?: number;
  /** Largest retry delay (ms). Default 30 000. */
  retryMaxDelayMs?: number;
  /** Random spread added to each retry delay, as a fraction of it. Default 0.2. */
  retryJitter?: number;
  /** Attempts per event before it is dropped. Default 12 (as the kubelet). */
  maxAttemptsPerEvent?: number;
  /** How long `close()` keeps flushing before it drops what is left (ms). Default 5000. */
  closeTimeoutMs?: number;
  /** Time source and timers. Default the wall clock. Tests inject a manual clock. */
  clock?: Clock;
}

/** An image whose layers are served by imgstream. */
export interface ImageStreamingReport {
  /** Image reference as the user wrote it (`docker.io/library/nginx:1.27`). */
  image: string;
  /** Digest of the manifest that was resolved. */
  manifestDigest?: string;
  /** The streamed layers, or how many there are. */
  layers?: number | readonly string[];
}

/** A layer (or a whole image) that is pulled in full instead of streamed. Give `reason`, `code`, or both (`reason` wins). */
export interface LayerFallbackReport {
  /** Image reference. */
  image: string;
  /** Digest of the layer; absent when the cause concerns the whole image (schema 1, auth). */
  layerDigest?: string;
  /** Why. */
  reason?: FallbackReason;
  /** An ImgstreamError `code`; mapped to a reason through the same table when `reason` is absent, and named in the message. */
  code?: string;
  /** Extra text for the message, e.g. the media type. Keep it stable: a varying detail defeats aggregation. */
  detail?: string;
}

/** Counters since construction. */
export interface EventReporterStats {
  /** Calls accepted (each occurrence counts). */
  reported: number;
  /** Event objects created. */
  created: number;
  /** Patches that raised an Event's count. */
  patched: number;
  /** Sends dropped (queue overflow, retries exhausted, rejected by the API server, closed, invalid input). */
  dropped: number;
  /** Failed writes that were retried. */
  retries: number;
  /** Events waiting to be written now. */
  queued: number;
}

type DropWhy = 'queue-full' | 'retries-exhausted' | 'rejected' | 'closed' | 'invalid-input';

/** One aggregated event: identical occurrences within the window, written as one Event object. */
interface Series {
  readonly key: string;
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
  readonly firstMs: number;
  lastMs: number;
  /** Occurrences so far. */
  count: number;
  /** The count the API server has. */
  sentCount: number;
  /** Name of the Event object once created. */
  name: string | undefined;
  /** Name chosen for a create that has not succeeded yet; reused on retry so a lost response yields 409, not a duplicate. */
  pendingName: string | undefined;
  queued: boolean;
  attempts: number;
}

/**
 * Writes Kubernetes Events about this node: `ImageStreaming` (Normal) when an image is backed by
 * streaming, a Warning with a distinct reason per fallback cause. Reporting never blocks or fails
 * the caller: the methods return at once and queue; a background sender aggregates repeats into
 * one core/v1 Event (`count`, `lastTimestamp`) like the kubelet, spends a token-bucket budget per
 * write, and retries with exponential backoff while the API server is unavailable.
 */
export class EventReporter {
  readonly #client: KubeClient;
  readonly #nodeName: string;
  readonly #namespace: string;
  readonly #component: string;
  readonly #windowMs: number;
  readonly #maxKeys: number;
  readonly #maxQueued: number;
  readonly #maxAttempts: number;
  readonly #closeTimeoutMs: number;
  readonly #backoff: BackoffOptions;
  readonly #clock: Clock;
  readonly #bucket: TokenBucket;

  #nodeUid: string | undefined;
  #uidResolved: boolean;
  readonly #series = new Map<string, Series>();
  readonly #queue: Series[] = [];
  #failures = 0;
  #nameSeq = 0;
  #lastNameNs = 0n;

  #scheduled = false;
  #pumping = false;
  #inflight: AbortController | undefined;
  /** The series being sent (taken off the queue), until its send settles. */
  #current: Series | undefined;
  #sleepTimer: unknown;
  #sleepWake: (() => void) | undefined;
  #idleWaiters: Array<() => void> = [];
  #closed = false;
  #destroyed = false;
  #closing: Promise<void> | undefined;

  readonly #stats = { reported: 0, created: 0, patched: 0, dropped: 0, retries: 0 };

  constructor(options: EventReporterOptions) {
    const d = K8S_EVENTS_DEFAULTS;
    if (options === null || typeof options !== 'object') throw invalidOption('options', 'must be an object');
    if (options.client === undefined || options.client === null) throw invalidOption('client', 'is required');
    if (typeof options.nodeName !== 'string' || !isDnsSubdomain(options.nodeName, 236)) {
      throw invalidOption('nodeName', 'must be a Node name (DNS-1123 subdomain, at most 236 characters)');
    }
    this.#client = options.client;
    this.#nodeName = options.nodeName;
    this.#namespace = options.namespace ?? d.namespace;
    if (!isDnsLabel(this.#namespace)) throw invalidOption('namespace', 'must be a namespace name (DNS-1123 label)');
    this.#component = options.component ?? d.component;
    if (typeof this.#component !== 'string' || this.#component === '') throw invalidOption('component', 'must be a non-empty string');
    const eventsPerSecond = positive('eventsPerSecond', options.eventsPerSecond ?? d.eventsPerSecond);
    const eventBurst = integerAtLeast('eventBurst', options.eventBurst ?? d.eventBurst, 1);
    this.#windowMs = nonNegative('aggregationWindowMs', options.aggregationWindowMs ?? d.aggregationWindowMs);
    this.#maxKeys = integerAtLeast('maxAggregationKeys', options.maxAggregationKeys ?? d.maxAggregationKeys, 1);
    this.#maxQueued = integerAtLeast('maxQueuedEvents', options.maxQueuedEvents ?? d.maxQueuedEvents, 1);
    this.#maxAttempts = integerAtLeast('maxAttemptsPerEvent', options.maxAttemptsPerEvent ?? d.maxAttemptsPerEvent, 1);
    this.#closeTimeoutMs = nonNegative('closeTimeoutMs', options.closeTimeoutMs ?? d.closeTimeoutMs);
    this.#backoff = {
      initialDelayMs: positive('retryInitialDelayMs', options.retryInitialDelayMs ?? d.retryInitialDelayMs),
      maxDelayMs: positive('retryMaxDelayMs', options.retryMaxDelayMs ?? d.retryMaxDelayMs),
      jitter: nonNegative('retryJitter', options.retryJitter ?? d.retryJitter),
    };
    if (this.#backoff.maxDelayMs < this.#backoff.initialDelayMs) {
      throw invalidOption('retryMaxDelayMs', 'must not be below retryInitialDelayMs');
    }
    this.#clock = options.clock ?? systemClock;
    this.#bucket = new TokenBucket(eventBurst, eventsPerSecond, this.#clock.now());
    this.#nodeUid = options.nodeUid;
    this.#uidResolved = options.nodeUid !== undefined || options.lookupNodeUid === false;
  }

  /** Reports that `image` is backed by image streaming (Normal `ImageStreaming`). Returns at once. */
  imageStreaming(report: ImageStreamingReport): void {
    const valid = (): boolean =>
      isReport(report) &&
      (report.manifestDigest === undefined || typeof report.manifestDigest === 'string') &&
      (report.layers === undefined || Array.isArray(report.layers) || (Number.isInteger(report.layers) && (report.layers as number) >= 0));
    if (!this.#accepting(report, valid)) return;
    const layers = Array.isArray(report.layers) ? report.layers.length : (report.layers as number | undefined);
    this.#record('Normal', EventReason.IMAGE_STREAMING, imageStreamingMessage(report.image, report.manifestDigest, layers));
  }

  /** Reports that a layer (or image) is pulled in full, with a Warning reason per cause. Returns at once. */
  layerFallback(report: LayerFallbackReport): void {
    const valid = (): boolean =>
      isReport(report) &&
      (report.reason === undefined || isFallbackReason(report.reason)) &&
      (report.code === undefined || typeof report.code === 'string') &&
      (report.reason !== undefined || report.code !== undefined) &&
      (report.layerDigest === undefined || (typeof report.layerDigest === 'string' && report.layerDigest !== '')) &&
      (report.detail === undefined || typeof report.detail === 'string');
    if (!this.#accepting(report, valid)) return;
    const reason = report.reason ?? fallbackReasonForCode(report.code as string);
    const message = fallbackMessage(reason, report.image, report.layerDigest, report.code, report.detail);
    this.#record('Warning', FALLBACK_TABLE[reason].eventReason, message);
  }

  /** Counters since construction. */
  stats(): EventReporterStats {
    return { ...this.#stats, queued: this.#queue.length };
  }

  /**
   * Stops accepting reports and flushes what is queued, waiting at most `closeTimeoutMs`; then drops
   * the rest (diagnostic) and aborts the request in flight. Idempotent; never rejects.
   */
  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    this.#closed = true;
    this.#closing = (async () => {
      if (this.#isIdle()) return this.destroy();
      let timer: unknown;
      const timedOut = new Promise<void>((resolve) => {
        timer = this.#clock.setTimeout(resolve, this.#closeTimeoutMs);
      });
      await Promise.race([this.#whenIdle(), timedOut]);
      this.#clock.clearTimeout(timer);
      this.destroy();
    })();
    return this.#closing;
  }

  /** Stops at once: drops everything queued, aborts the request in flight. Idempotent. */
  destroy(): void {
    this.#closed = true;
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#inflight?.abort(new Error('EventReporter destroyed'));
    if (this.#current !== undefined && !this.#current.queued) this.#drop(this.#current, 'closed');
    this.#current = undefined;
    this.#wakeSleeper();
    for (const s of this.#queue.splice(0)) {
      s.queued = false;
      this.#drop(s, 'closed');
    }
    this.#settleIdle();
  }

  #accepting(report: unknown, valid: () => boolean): boolean {
    if (this.#closed) {
      this.#stats.dropped++;
      publish(dropChannel, { why: 'closed' satisfies DropWhy, report });
      return false;
    }
    if (!valid()) {
      this.#stats.dropped++;
      publish(dropChannel, { why: 'invalid-input' satisfies DropWhy, report });
      return false;
    }
    return true;
  }

  #record(type: 'Normal' | 'Warning', reason: string, message: string): void {
    const now = this.#clock.now();
    const key = `${type}\u0000${reason}\u0000${message}`;
    this.#stats.reported++;
    let s = this.#series.get(key);
    if (s !== undefined && now - s.lastMs <= this.#windowMs) {
      s.count++;
      s.lastMs = Math.max(s.lastMs, now);
      this.#series.delete(key); // refresh its place in the LRU order
      this.#series.set(key, s);
    } else {
      s = { key, type, reason, message, firstMs: now, lastMs: now, count: 1, sentCount: 0, name: undefined, pendingName: undefined, queued: false, attempts: 0 };
      this.#series.delete(key);
      this.#series.set(key, s);
      while (this.#series.size > this.#maxKeys) {
        const oldest = this.#series.keys().next().value as string;
        this.#series.delete(oldest); // if still queued it is still sent; it just no longer aggregates
      }
    }
    this.#enqueue(s, 'tail');
  }

  #enqueue(s: Series, where: 'head' | 'tail'): void {
    if (s.queued) {
      if (where === 'tail') return this.#kick();
      this.#queue.splice(this.#queue.indexOf(s), 1);
    }
    s.queued = true;
    if (where === 'head') this.#queue.unshift(s);
    else this.#queue.push(s);
    while (this.#queue.length > this.#maxQueued) {
      const oldest = this.#queue.shift() as Series;
      oldest.queued = false;
      this.#drop(oldest, 'queue-full');
    }
    this.#kick();
  }

  #drop(s: Series, why: DropWhy, error?: unknown): void {
    this.#stats.dropped++;
    if (s.name === undefined && this.#series.get(s.key) === s) this.#series.delete(s.key);
    publish(dropChannel, {
      why,
      reason: s.reason,
      message: s.message,
      count: s.count - s.sentCount,
      ...(error !== undefined ? { error } : {}),
    });
  }

  /** Starts the sender on a later turn, so a caller never runs any of it. */
  #kick(): void {
    if (this.#scheduled || this.#pumping || this.#destroyed) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      void this.#pump();
    });
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (!this.#destroyed) {
        const s = this.#queue[0];
        if (s === undefined) break;
        const now = this.#clock.now();
        if (!this.#bucket.tryTake(now)) {
          await this.#sleep(this.#bucket.delayMs(now));
          continue;
        }
        this.#queue.shift();
        s.queued = false;
        this.#current = s;
        try {
          await this.#send(s);
          this.#failures = 0;
          s.attempts = 0;
          if (s.count > s.sentCount && !this.#destroyed) this.#enqueue(s, 'tail');
        } catch (err) {
          if (this.#destroyed) break; // destroy() counted it as dropped
          if (!isRetryableApiError(err)) {
            this.#drop(s, 'rejected', err);
            continue;
          }
          s.attempts++;
          this.#failures++;
          if (s.attempts >= this.#maxAttempts) {
            this.#drop(s, 'retries-exhausted', err);
            continue;
          }
          const delayMs = backoffDelayMs(this.#failures, this.#backoff);
          this.#stats.retries++;
          publish(retryChannel, { reason: s.reason, attempt: s.attempts, delayMs, error: err });
          this.#enqueue(s, 'head');
          await this.#sleep(delayMs);
        } finally {
          this.#current = undefined;
        }
      }
    } finally {
      this.#pumping = false;
      if (this.#isIdle()) this.#settleIdle();
      else if (!this.#destroyed) this.#kick();
    }
  }

  /** One write for the series (its token is already taken): resolve the node UID if needed, then create or patch. Throws on failure. */
  async #send(s: Series): Promise<void> {
    const ac = new AbortController();
    this.#inflight = ac;
    try {
      if (!this.#uidResolved) await this.#resolveNodeUid(ac.signal);
      const count = s.count;
      const lastTimestamp = rfc3339(s.lastMs);
      if (s.name !== undefined) {
        try {
          await this.#client.patchEvent(this.#namespace, s.name, { count, lastTimestamp }, { signal: ac.signal });
          s.sentCount = count;
          this.#stats.patched++;
          publish(eventChannel, { action: 'patched', name: s.name, type: s.type, reason: s.reason, count, message: s.message });
          return;
        } catch (err) {
          if (apiErrorStatus(err) !== 404) throw err;
          s.name = undefined; // the Event expired (its TTL is 1 h by default): start a new one with the running count
        }
      }
      s.pendingName ??= this.#newEventName();
      try {
        await this.#client.createEvent(this.#eventBody(s, s.pendingName, count), { signal: ac.signal });
      } catch (err) {
        if (apiErrorStatus(err) !== 409) throw err;
        // AlreadyExists: an earlier attempt with this name succeeded but its answer was lost.
      }
      s.name = s.pendingName;
      s.pendingName = undefined;
      s.sentCount = count;
      this.#stats.created++;
      publish(eventChannel, { action: 'created', name: s.name, type: s.type, reason: s.reason, count, message: s.message });
    } finally {
      if (this.#inflight === ac) this.#inflight = undefined;
    }
  }

  async #resolveNodeUid(signal: AbortSignal): Promise<void> {
    try {
      const node = await this.#client.readNode(this.#nodeName, { signal });
      this.#nodeUid = node.uid;
      this.#uidResolved = true;
    } catch (err) {
      if (isRetryableApiError(err) || signal.aborted) throw err;
      this.#uidResolved = true; // forbidden or no such node: write events without the UID
    }
  }

  #eventBody(s: Series, name: string, count: number): CoreV1EventBody {
    return {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace: this.#namespace },
      involvedObject: {
        apiVersion: 'v1',
        kind: 'Node',
        name: this.#nodeName,
        ...(this.#nodeUid !== undefined ? { uid: this.#nodeUid } : {}),
      },
      reason: s.reason,
      message: s.message,
      type: s.type,
      source: { component: this.#component, host: this.#nodeName },
      firstTimestamp: rfc3339(s.firstMs),
      lastTimestamp: rfc3339(s.lastMs),
      count,
      reportingComponent: this.#component,
      reportingInstance: this.#nodeName,
    };
  }

  /** `<node>.<hex nanoseconds>` like the kubelet, strictly increasing so names never collide. */
  #newEventName(): string {
    let ns = BigInt(Math.floor(this.#clock.now())) * 1_000_000n + BigInt(this.#nameSeq++ % 1_000_000);
    if (ns <= this.#lastNameNs) ns = this.#lastNameNs + 1n;
    this.#lastNameNs = ns;
    return `${this.#nodeName}.${ns.toString(16)}`;
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#sleepWake = resolve;
      this.#sleepTimer = this.#clock.setTimeout(() => {
        this.#sleepTimer = undefined;
        this.#sleepWake = undefined;
        resolve();
      }, ms);
    });
  }

  #wakeSleeper(): void {
    if (this.#sleepTimer !== undefined) this.#clock.clearTimeout(this.#sleepTimer);
    this.#sleepTimer = undefined;
    const wake = this.#sleepWake;
    this.#sleepWake = undefined;
    wake?.();
  }

  #isIdle(): boolean {
    return this.#destroyed || (this.#queue.length === 0 && !this.#pumping && !this.#scheduled);
  }

  #whenIdle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #settleIdle(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }
}

function isReport(report: unknown): report is { image: string } {
  return report !== null && typeof report === 'object' && typeof (report as { image?: unknown }).image === 'string' && (report as { image: string }).image !== '';
}

/** metav1.Time: RFC 3339 with second precision. */
function rfc3339(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

function positive(option: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw invalidOption(option, 'must be a positive number');
  return value;
}

function nonNegative(option: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw invalidOption(option, 'must be a non-negative number');
  return value;
}

function integerAtLeast(option: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw invalidOption(option, `must be an integer >= ${min}`);
  return value;
}
