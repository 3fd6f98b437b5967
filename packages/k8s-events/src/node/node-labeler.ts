import { ErrorCode, ImgstreamError, invalidOption, publish } from '@imgstream/core';
import { systemClock, type Clock } from '../clock.js';
import { K8S_EVENTS_DEFAULTS } from '../defaults.js';
import { nodeLabelChannel } from '../diagnostics.js';
import { isRetryableApiError } from '../kube/api-error.js';
import type { KubeClient, NodeInfo } from '../kube/client.js';
import { isDnsSubdomain, isLabelKey, isLabelValue } from '../kube/names.js';
import { backoffDelayMs, type BackoffOptions } from '../reporter/backoff.js';

export interface NodeLabelerOptions {
  /** The Kubernetes API client (see `loadKubeClient()`). Required. */
  client: KubeClient;
  /** Name of this node's Node object. Required. */
  nodeName: string;
  /** Label key. Default `imgstream.dev/image-streaming` (workloads select streaming nodes with it). */
  labelName?: string;
  /** Label value. Default `"true"`. */
  labelValue?: string;
  /** Remove the label in `close()` (a clean shutdown). Default false: a restarting daemon keeps the node labelled. */
  removeOnClose?: boolean;
  /** Attempts per patch before `start()`/`close()` reject; only unreachable/5xx/429 answers are retried. Default 5. */
  maxAttempts?: number;
  /** First retry delay (ms); doubles per failure. Default 500. */
  retryInitialDelayMs?: number;
  /** Largest retry delay (ms). Default 30 000. */
  retryMaxDelayMs?: number;
  /** Random spread added to each retry delay, as a fraction of it. Default 0.2. */
  retryJitter?: number;
  /** Time source and timers. Default the wall clock. */
  clock?: Clock;
}

/**
 * Labels this node so workloads can select nodes with image streaming
 * (`nodeSelector: { imgstream.dev/image-streaming: "true" }`), with a strategic-merge patch of
 * `metadata.labels` that leaves every other label alone. `close()` removes the label if asked.
 */
export class NodeLabeler {
  readonly #client: KubeClient;
  readonly #nodeName: string;
  readonly #labelName: string;
  readonly #labelValue: string;
  readonly #removeOnClose: boolean;
  readonly #maxAttempts: number;
  readonly #backoff: BackoffOptions;
  readonly #clock: Clock;
  #starting: Promise<NodeInfo> | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: NodeLabelerOptions) {
    const d = K8S_EVENTS_DEFAULTS;
    if (options === null || typeof options !== 'object') throw invalidOption('options', 'must be an object');
    if (options.client === undefined || options.client === null) throw invalidOption('client', 'is required');
    if (typeof options.nodeName !== 'string' || !isDnsSubdomain(options.nodeName)) {
      throw invalidOption('nodeName', 'must be a Node name (DNS-1123 subdomain)');
    }
    this.#client = options.client;
    this.#nodeName = options.nodeName;
    this.#labelName = options.labelName ?? d.nodeLabelName;
    if (typeof this.#labelName !== 'string' || !isLabelKey(this.#labelName)) {
      throw invalidOption('labelName', 'must be a label key ([prefix/]name)');
    }
    this.#labelValue = options.labelValue ?? d.nodeLabelValue;
    if (typeof this.#labelValue !== 'string' || !isLabelValue(this.#labelValue)) {
      throw invalidOption('labelValue', 'must be a label value (at most 63 characters of [A-Za-z0-9-_.])');
    }
    this.#removeOnClose = options.removeOnClose ?? false;
    this.#maxAttempts = options.maxAttempts ?? d.nodeLabelMaxAttempts;
    if (!Number.isInteger(this.#maxAttempts) || this.#maxAttempts < 1) throw invalidOption('maxAttempts', 'must be an integer >= 1');
    this.#backoff = {
      initialDelayMs: options.retryInitialDelayMs ?? d.retryInitialDelayMs,
      maxDelayMs: options.retryMaxDelayMs ?? d.retryMaxDelayMs,
      jitter: options.retryJitter ?? d.retryJitter,
    };
    for (const [name, value] of Object.entries(this.#backoff)) {
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw invalidOption(name, 'must be a non-negative number');
    }
    this.#clock = options.clock ?? systemClock;
  }

  /** The label key this labeler manages. */
  get labelName(): string {
    return this.#labelName;
  }

  /**
   * Sets the label. Resolves with the Node as patched (its UID is useful for `EventReporter`'s
   * `nodeUid`); rejects with `IMGSTREAM_KUBERNETES_API` when the API server refuses or stays
   * unreachable for `maxAttempts`, with `signal.reason` when aborted. Idempotent.
   */
  start(options: { signal?: AbortSignal } = {}): Promise<NodeInfo> {
    if (this.#closing !== undefined) {
      return Promise.reject(new ImgstreamError(ErrorCode.CLOSED, 'NodeLabeler.start() after close()'));
    }
    this.#starting ??= this.#patch({ [this.#labelName]: this.#labelValue }, 'set', options.signal);
    return this.#starting;
  }

  /**
   * Removes the label when `removeOnClose` was set and `start()` succeeded; otherwise does nothing.
   * Rejects like `start()` when the removal fails. Idempotent.
   */
  close(options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#closing ??= (async () => {
      if (!this.#removeOnClose || this.#starting === undefined) return;
      try {
        await this.#starting;
      } catch {
        return; // never labelled
      }
      await this.#patch({ [this.#labelName]: null }, 'removed', options.signal);
    })();
    return this.#closing;
  }

  async #patch(labels: Record<string, string | null>, action: 'set' | 'removed', signal: AbortSignal | undefined): Promise<NodeInfo> {
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      try {
        const node = await this.#client.patchNodeLabels(this.#nodeName, labels, signal ? { signal } : {});
        publish(nodeLabelChannel, { action, node: this.#nodeName, label: this.#labelName, value: labels[this.#labelName] });
        return node;
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (!isRetryableApiError(err) || attempt >= this.#maxAttempts) throw err;
        await sleep(this.#clock, backoffDelayMs(attempt, this.#backoff), signal);
      }
    }
  }
}

function sleep(clock: Clock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clock.clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
