// The public surface of @imgstream/k8s-events: named re-exports only.
export { EventReporter } from './reporter/event-reporter.js';
export type {
  EventReporterOptions,
  EventReporterStats,
  ImageStreamingReport,
  LayerFallbackReport,
} from './reporter/event-reporter.js';
export { EventReason, FALLBACK_REASONS, FALLBACK_TABLE, eventReasonFor, fallbackReasonForCode } from './reporter/reasons.js';
export type { FallbackReason } from './reporter/reasons.js';
export { NodeLabeler } from './node/node-labeler.js';
export type { NodeLabelerOptions } from './node/node-labeler.js';
export { loadKubeClient } from './kube/load-client.js';
export type { KubeClientOptions } from './kube/load-client.js';
export type { CoreV1EventBody, EventCountPatch, KubeClient, KubeRequestOptions, NodeInfo } from './kube/client.js';
export { systemClock } from './clock.js';
export type { Clock } from './clock.js';
export { K8S_EVENTS_DEFAULTS } from './defaults.js';
