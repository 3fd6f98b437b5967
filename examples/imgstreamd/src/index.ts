// The public surface of imgstreamd (for embedding and tests): named re-exports only.
export { resolveConfig, parseBytes, parseDurationMs, FLAGS } from './config.js';
export type { DaemonConfig } from './config.js';
export { ControlClient, ControlError, listenControl } from './control.js';
export type { ControlHandlers, LayerDir, LayerRef, LowerDirReply, OpenLayerReply, ReleaseImageRequest } from './control.js';
export { runFuseServer } from './fuse-server.js';
export { runSnapshotter, controlDecider, IMAGE_KEY_LABEL, type ControlDeciderOptions } from './snapshotter-process.js';
export { DaemonMetrics } from './metrics.js';
