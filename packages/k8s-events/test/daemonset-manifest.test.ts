import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import yaml from 'js-yaml';
import { DaemonSet, type IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ClusterRole, type IClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding, type IClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { ServiceAccount, type IServiceAccount } from 'kubernetes-models/v1/ServiceAccount';

const manifest = new URL('../../../examples/k8s/daemonset.yaml', import.meta.url);
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each model takes its own object type
const models: Record<string, new (data: any) => { validate(): void }> = {
  'v1/ServiceAccount': ServiceAccount,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'apps/v1/DaemonSet': DaemonSet,
};

/** The manifest's objects, in order: ServiceAccount, ClusterRole, ClusterRoleBinding, DaemonSet. */
interface Manifest {
  objects: Array<{ apiVersion: string; kind: string }>;
  sa: IServiceAccount & { metadata: { name: string; namespace: string } };
  role: IClusterRole & { metadata: { name: string } };
  binding: IClusterRoleBinding;
  ds: IDaemonSet & { metadata: { namespace: string }; spec: NonNullable<IDaemonSet['spec']> };
}

async function load(): Promise<Manifest> {
  const objects = yaml.loadAll(await readFile(manifest, 'utf8')) as Manifest['objects'];
  const [sa, role, binding, ds] = objects as unknown as [Manifest['sa'], Manifest['role'], Manifest['binding'], Manifest['ds']];
  return { objects, sa, role, binding, ds };
}

test('examples/k8s/daemonset.yaml: four objects, each valid against the Kubernetes schemas', async () => {
  const { objects, ds } = await load();
  assert.deepEqual(objects.map((o) => `${o.apiVersion}/${o.kind}`), Object.keys(models));
  for (const o of objects) {
    const Model = models[`${o.apiVersion}/${o.kind}`]!;
    new Model(o).validate();
  }
  // the check can fail: a broken copy is rejected
  const broken = structuredClone(ds);
  (broken.spec.template.spec!.containers[0]!.volumeMounts![0] as { mountPath: unknown }).mountPath = 42;
  assert.throws(() => new DaemonSet(broken).validate(), /mountPath/);
});

test('RBAC is exactly events create/patch and nodes get/patch, bound to the DaemonSet\'s service account', async () => {
  const { sa, role, binding, ds } = await load();
  assert.deepEqual(role.rules, [
    { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
    { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'patch'] },
  ]);
  assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name });
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
  assert.equal(ds.metadata.namespace, sa.metadata.namespace);
  assert.equal(ds.spec.template.spec?.serviceAccountName, sa.metadata.name);
});

test('the DaemonSet runs imgstreamd privileged with the host paths it needs and Bidirectional propagation for FUSE mounts', async () => {
  const { ds } = await load();
  const pod = ds.spec.template.spec!;
  assert.deepEqual(ds.spec.selector.matchLabels, ds.spec.template.metadata?.labels);
  assert.equal(pod.hostPID, undefined);
  assert.equal(pod.hostNetwork, undefined);
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  assert.equal(pod.containers.length, 1);
  const c = pod.containers[0]!;
  assert.equal(c.securityContext?.privileged, true);
  assert.ok(c.args?.includes('--event_reporter_type=k8s'));
  assert.deepEqual(c.env, [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }]);
  const hostPaths = Object.fromEntries((pod.volumes ?? []).map((v) => [v.name, v.hostPath]));
  const mounts = (c.volumeMounts ?? []).map((m) => [m.mountPath, hostPaths[m.name]?.path, hostPaths[m.name]?.type, m.mountPropagation ?? 'None']);
  assert.deepEqual(mounts, [
    ['/run/imgstream', '/run/imgstream', 'DirectoryOrCreate', 'Bidirectional'],
    ['/var/lib/imgstream', '/var/lib/imgstream', 'DirectoryOrCreate', 'None'],
    ['/run/containerd', '/run/containerd', 'Directory', 'None'],
    ['/dev/fuse', '/dev/fuse', 'CharDevice', 'None'],
  ]);
});
