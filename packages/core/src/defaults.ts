/**
 * Every default of every imgstream option, in one frozen object. Options objects document their
 * default by pointing here; constructors resolve them once.
 */
export const defaults = Object.freeze({
  snapshotter: Object.freeze({
    /** Where the snapshotter keeps its metadata file and snapshot directories. */
    rootDir: '/var/lib/imgstream/snapshotter',
    /** How many snapshot infos one List response message carries. */
    listBatchSize: 100,
    /** How long close() waits for in-flight RPCs before cancelling them, in ms. */
    closeGraceMs: 5_000,
  }),
});

export type Defaults = typeof defaults;
