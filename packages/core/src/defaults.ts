/**
 * Every default value of every option, in one place. Options objects document each default
 * and resolve it from here once, in their constructor.
 */
export const DEFAULTS = Object.freeze({
  /** Where the imgstream FUSE filesystem is mounted (`layers/`, `images/`). */
  fuseMountPoint: '/run/imgstream/mnt',
  /** How long one FUSE read may wait for its content before it fails with EIO. */
  fuseReadTimeoutMs: 30_000,
  /** Largest read the kernel sends in one FUSE request (libfuse2 caps it at 128 KiB). */
  fuseMaxReadBytes: 128 * 1024,
  /** Kernel read-ahead window on the FUSE mount. */
  fuseMaxReadaheadBytes: 1024 * 1024,
  /** How long the kernel may cache attributes and directory entries of the (immutable) layers. */
  fuseCacheTimeoutMs: 3_600_000,
  /** How long mount-time checks of a possibly stale mount point may take before it is treated as stale. */
  fuseStaleCheckTimeoutMs: 5_000,
});
