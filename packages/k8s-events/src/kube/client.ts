/**
 * The few Kubernetes API calls imgstream makes, as a small interface. `loadKubeClient()` implements it
 * with @kubernetes/client-node; embedders with their own API client can implement it too.
 *
 * Every method rejects with an ImgstreamError `IMGSTREAM_KUBERNETES_API` carrying `status` (the HTTP
 * status, absent when the server could not be reached) and `retryable`, or with `signal.reason` when aborted.
 */
export interface KubeClient {
  /** POST /api/v1/namespaces/{ns}/events. */
  createEvent(event: CoreV1EventBody, options?: KubeRequestOptions): Promise<void>;
  /** PATCH /api/v1/namespaces/{ns}/events/{name} (strategic merge patch). */
  patchEvent(namespace: string, name: string, patch: EventCountPatch, options?: KubeRequestOptions): Promise<void>;
  /** GET /api/v1/nodes/{name}. */
  readNode(name: string, options?: KubeRequestOptions): Promise<NodeInfo>;
  /** PATCH /api/v1/nodes/{name} with a strategic merge patch of `metadata.labels`; `null` removes a label. */
  patchNodeLabels(name: string, labels: Readonly<Record<string, string | null>>, options?: KubeRequestOptions): Promise<NodeInfo>;
}

export interface KubeRequestOptions {
  signal?: AbortSignal;
}

/** The core/v1 Event this package writes about a Node. Timestamps are RFC 3339 (seconds). */
export interface CoreV1EventBody {
  apiVersion: 'v1';
  kind: 'Event';
  metadata: { name: string; namespace: string };
  involvedObject: { apiVersion: 'v1'; kind: 'Node'; name: string; uid?: string };
  reason: string;
  message: string;
  type: 'Normal' | 'Warning';
  source: { component: string; host: string };
  firstTimestamp: string;
  lastTimestamp: string;
  count: number;
  reportingComponent: string;
  reportingInstance: string;
}

/** The fields a repeat of an event changes. */
export interface EventCountPatch {
  count: number;
  lastTimestamp: string;
}

/** What imgstream needs to know about its Node object. */
export interface NodeInfo {
  name: string;
  uid?: string;
  labels: Readonly<Record<string, string>>;
}
