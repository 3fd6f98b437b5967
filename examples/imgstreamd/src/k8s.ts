import type { ImageStreamer } from '@imgstream/core';
import { EventReporter, NodeLabeler, loadKubeClient } from '@imgstream/k8s-events';
import type { DaemonConfig } from './config.js';
import type { Logger } from './logger.js';

/** `--event_reporter_type k8s`: Kubernetes events for streamed images and fallbacks, and the node label. */
export async function startEventReporting(config: DaemonConfig, streamer: ImageStreamer, log: Logger): Promise<{ close(): Promise<void> }> {
  if (config.eventReporterType === 'none') return { close: async () => undefined };
  const nodeName = config.k8sNodeName ?? process.env.NODE_NAME;
  if (nodeName === undefined || nodeName === '') throw new Error('--event_reporter_type k8s needs --k8s_node_name or $NODE_NAME');
  const client = await loadKubeClient(config.k8sKubeconfig !== undefined ? { kubeconfigPath: config.k8sKubeconfig } : {});
  const reporter = new EventReporter({ client, nodeName });
  const labeler = new NodeLabeler({ client, nodeName });
  labeler.start().catch((err: unknown) => log.warn({ err: String(err) }, 'node label not set'));
  const reported = new Set<string>();
  streamer.on('layer-streamed', (e) => {
    const key = `${e.imageRef}@${e.manifestDigest}`;
    if (reported.has(key)) return;
    reported.add(key);
    reporter.imageStreaming({ image: e.imageRef, manifestDigest: e.manifestDigest });
  });
  streamer.on('layer-fallback', (e) => reporter.layerFallback({ image: e.imageRef, layerDigest: e.layerDigest, code: e.code }));
  log.info({ node: nodeName }, 'Kubernetes event reporting on');
  return {
    async close() {
      await reporter.close();
      await labeler.close();
    },
  };
}
