/**
 * Every default of @imgstream/k8s-events, in one frozen object. Options TSDoc refers to these.
 * (Kept in this package rather than core's defaults: core knows nothing about Kubernetes.)
 */
export const K8S_EVENTS_DEFAULTS = Object.freeze({
  /** Namespace node events are written to; the kubelet writes its node events to `default` too. */
  namespace: 'default',
  /** `source.component` and `reportingComponent` of every event. */
  component: 'imgstreamd',
  /** Token bucket refill rate for API writes (creates and patches), per second. */
  eventsPerSecond: 1,
  /** Token bucket size: writes allowed back to back before the refill rate applies. */
  eventBurst: 25,
  /** Repeats of an identical event within this window patch one Event's count (ms). 10 minutes, like the kubelet. */
  aggregationWindowMs: 10 * 60_000,
  /** Distinct events remembered for aggregation (oldest forgotten first). */
  maxAggregationKeys: 4096,
  /** Events waiting to be written; on overflow the oldest is dropped. */
  maxQueuedEvents: 1000,
  /** First retry delay after the API server failed (ms); doubles per consecutive failure. */
  retryInitialDelayMs: 500,
  /** Upper bound of the retry delay (ms). */
  retryMaxDelayMs: 30_000,
  /** Random spread added to each retry delay, as a fraction of it (0 = none). */
  retryJitter: 0.2,
  /** Attempts per event before it is dropped; the kubelet uses 12. */
  maxAttemptsPerEvent: 12,
  /** How long `close()` keeps flushing queued events before dropping the rest (ms). */
  closeTimeoutMs: 5_000,
  /** Timeout of a single API request (ms). */
  requestTimeoutMs: 10_000,
  /** Node label that marks a node whose images can be streamed. */
  nodeLabelName: 'imgstream.dev/image-streaming',
  /** Value of that label. */
  nodeLabelValue: 'true',
  /** Attempts `NodeLabeler.start()` makes before it rejects. */
  nodeLabelMaxAttempts: 5,
});
