import { channel } from '@imgstream/core';

/** `imgstream:k8s-events:event`: an Event was created or patched. */
export const eventChannel = channel('k8s-events:event');
/** `imgstream:k8s-events:retry`: a write failed and will be retried after `delayMs`. */
export const retryChannel = channel('k8s-events:retry');
/** `imgstream:k8s-events:drop`: an event was dropped (`why`: queue-full, retries-exhausted, rejected, closed, invalid-input). */
export const dropChannel = channel('k8s-events:drop');
/** `imgstream:k8s-events:node-label`: the node label was set or removed. */
export const nodeLabelChannel = channel('k8s-events:node-label');
