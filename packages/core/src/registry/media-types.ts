/** Media types of the OCI image spec and Docker's schema 2. */
export const MediaType = Object.freeze({
  OCI_MANIFEST: 'application/vnd.oci.image.manifest.v1+json',
  OCI_INDEX: 'application/vnd.oci.image.index.v1+json',
  OCI_CONFIG: 'application/vnd.oci.image.config.v1+json',
  OCI_EMPTY: 'application/vnd.oci.empty.v1+json',
  OCI_LAYER: 'application/vnd.oci.image.layer.v1.tar',
  OCI_LAYER_GZIP: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OCI_LAYER_ZSTD: 'application/vnd.oci.image.layer.v1.tar+zstd',
  DOCKER_MANIFEST: 'application/vnd.docker.distribution.manifest.v2+json',
  DOCKER_MANIFEST_LIST: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DOCKER_CONFIG: 'application/vnd.docker.container.image.v1+json',
  DOCKER_LAYER_GZIP: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DOCKER_SCHEMA1_MANIFEST: 'application/vnd.docker.distribution.manifest.v1+json',
  DOCKER_SCHEMA1_SIGNED_MANIFEST: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
});

/** Media types of single-image manifests. */
export const MANIFEST_MEDIA_TYPES: readonly string[] = Object.freeze([MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST]);
/** Media types of indexes / manifest lists. */
export const INDEX_MEDIA_TYPES: readonly string[] = Object.freeze([MediaType.OCI_INDEX, MediaType.DOCKER_MANIFEST_LIST]);
/** The `Accept` header sent for manifests. */
export const MANIFEST_ACCEPT = [MediaType.OCI_INDEX, MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST_LIST, MediaType.DOCKER_MANIFEST].join(', ');
