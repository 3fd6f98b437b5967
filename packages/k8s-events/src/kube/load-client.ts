import { access } from 'node:fs/promises';
import { ErrorCode, ImgstreamError, invalidOption } from '@imgstream/core';
import type * as ClientNode from '@kubernetes/client-node';
import { K8S_EVENTS_DEFAULTS } from '../defaults.js';
import { kubeApiError } from './api-error.js';
import type { CoreV1EventBody, EventCountPatch, KubeClient, KubeRequestOptions, NodeInfo } from './client.js';

/** Where the Kubernetes credentials come from. */
export interface KubeClientOptions {
  /**
   * Path of a kubeconfig file. When absent, the in-cluster service account is used
   * (`KUBERNETES_SERVICE_HOST`/`_PORT` and the token and CA under
   * `/var/run/secrets/kubernetes.io/serviceaccount/`). Default: in-cluster.
   */
  kubeconfigPath?: string;
  /** Context to use from the kubeconfig. Default: its `current-context`. */
  context?: string;
  /** Prefix of the service-account directory for in-cluster credentials (chroots, tests). Default `''`. */
  inClusterPathPrefix?: string;
  /** Timeout of each API request, in ms. Default 10 000. */
  requestTimeoutMs?: number;
}

const PEER = '@kubernetes/client-node';
const STRATEGIC_MERGE_PATCH = 'application/strategic-merge-patch+json';
const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * Loads credentials and returns a {@link KubeClient} backed by the optional peer
 * `@kubernetes/client-node` (~1.4), imported on demand. Rejects with
 * `IMGSTREAM_KUBERNETES_CLIENT_MISSING` when the peer is not installed and with
 * `IMGSTREAM_KUBERNETES_CONFIG` when the credentials cannot be loaded.
 */
export async function loadKubeClient(options: KubeClientOptions = {}): Promise<KubeClient> {
  const requestTimeoutMs = options.requestTimeoutMs ?? K8S_EVENTS_DEFAULTS.requestTimeoutMs;
  if (!Number.isFinite(requestTimeoutMs) || requestTimeoutMs <= 0) {
    throw invalidOption('requestTimeoutMs', 'must be a positive number of milliseconds');
  }
  const k8s = await importClientNode();
  const kc = new k8s.KubeConfig();
  if (options.kubeconfigPath !== undefined) {
    try {
      kc.loadFromFile(options.kubeconfigPath);
      if (options.context !== undefined) kc.setCurrentContext(options.context);
    } catch (cause) {
      throw configError(`cannot load kubeconfig ${options.kubeconfigPath}: ${(cause as Error).message}`, cause);
    }
  } else {
    const host = process.env.KUBERNETES_SERVICE_HOST;
    const port = process.env.KUBERNETES_SERVICE_PORT;
    if (!host || !port) {
      throw configError('not running in a cluster (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT unset); pass kubeconfigPath');
    }
    const prefix = options.inClusterPathPrefix ?? '';
    try {
      await access(`${prefix}${SERVICE_ACCOUNT_TOKEN}`);
    } catch (cause) {
      throw configError(`no service account token at ${prefix}${SERVICE_ACCOUNT_TOKEN}`, cause);
    }
    kc.loadFromCluster(prefix);
  }
  const cluster = kc.getCurrentCluster();
  if (cluster === null) throw configError('the kubeconfig has no current cluster');
  return new ClientNodeKubeClient(k8s, kc.makeApiClient(k8s.CoreV1Api), requestTimeoutMs);
}

async function importClientNode(): Promise<typeof ClientNode> {
  try {
    return await import(PEER);
  } catch (cause) {
    const code = (cause as { code?: unknown }).code;
    const missing = code === 'ERR_MODULE_NOT_FOUND' && String((cause as Error).message).includes(PEER);
    throw new ImgstreamError(
      ErrorCode.KUBERNETES_CLIENT_MISSING,
      missing
        ? `${PEER} is not installed; install it next to @imgstream/k8s-events: npm install ${PEER}@~1.4.0`
        : `${PEER} failed to load (imgstream needs ~1.4 on Node 20; 2.x needs Node 22): ${(cause as Error).message}`,
      { cause },
    );
  }
}

function configError(message: string, cause?: unknown): ImgstreamError {
  return new ImgstreamError(ErrorCode.KUBERNETES_CONFIG, message, cause === undefined ? {} : { cause });
}

class ClientNodeKubeClient implements KubeClient {
  readonly #k8s: typeof ClientNode;
  readonly #api: ClientNode.CoreV1Api;
  readonly #timeoutMs: number;

  constructor(k8s: typeof ClientNode, api: ClientNode.CoreV1Api, timeoutMs: number) {
    this.#k8s = k8s;
    this.#api = api;
    this.#timeoutMs = timeoutMs;
  }

  async createEvent(event: CoreV1EventBody, options: KubeRequestOptions = {}): Promise<void> {
    const { namespace } = event.metadata;
    await this.#call('create event', options, undefined, (o) =>
      this.#api.createNamespacedEvent({ namespace, body: event as unknown as ClientNode.CoreV1Event }, o),
    );
  }

  async patchEvent(namespace: string, name: string, patch: EventCountPatch, options: KubeRequestOptions = {}): Promise<void> {
    await this.#call('patch event', options, STRATEGIC_MERGE_PATCH, (o) =>
      this.#api.patchNamespacedEvent({ name, namespace, body: patch }, o),
    );
  }

  async readNode(name: string, options: KubeRequestOptions = {}): Promise<NodeInfo> {
    const node = await this.#call('get node', options, undefined, (o) => this.#api.readNode({ name }, o));
    return nodeInfo(name, node);
  }

  async patchNodeLabels(
    name: string,
    labels: Readonly<Record<string, string | null>>,
    options: KubeRequestOptions = {},
  ): Promise<NodeInfo> {
    const body = { metadata: { labels } };
    const node = await this.#call('patch node', options, STRATEGIC_MERGE_PATCH, (o) => this.#api.patchNode({ name, body }, o));
    return nodeInfo(name, node);
  }

  /** Runs one request with a timeout, the caller's signal and (for patches) the patch content type. */
  async #call<T>(
    operation: string,
    options: KubeRequestOptions,
    contentType: string | undefined,
    run: (o: ClientNode.ConfigurationOptions) => Promise<T>,
  ): Promise<T> {
    options.signal?.throwIfAborted();
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    const Observable = this.#k8s.Observable;
    const middleware: ClientNode.ObservableMiddleware = {
      pre: (ctx) => {
        if (contentType !== undefined) ctx.setHeaderParam('Content-Type', contentType);
        ctx.setSignal(signal);
        return new Observable(Promise.resolve(ctx));
      },
      post: (res) => new Observable(Promise.resolve(res)),
    };
    try {
      return await run({ middleware: [middleware], middlewareMergeStrategy: 'append' });
    } catch (err) {
      if (options.signal?.aborted) throw options.signal.reason;
      if (err instanceof this.#k8s.ApiException) {
        const body = err.body as { message?: unknown } | string | undefined;
        const detail = typeof body === 'object' && body !== null && typeof body.message === 'string' ? body.message : '';
        throw kubeApiError(operation, err.code, detail, err);
      }
      const reason = timeout.aborted ? `timed out after ${this.#timeoutMs} ms` : (err as Error).message;
      throw kubeApiError(operation, undefined, reason, err);
    }
  }
}

function nodeInfo(name: string, node: ClientNode.V1Node): NodeInfo {
  const uid = node.metadata?.uid;
  return { name, ...(uid ? { uid } : {}), labels: { ...(node.metadata?.labels ?? {}) } };
}
