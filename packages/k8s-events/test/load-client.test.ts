import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { ErrorCode, ImgstreamError } from '@imgstream/core';
import { loadKubeClient } from '@imgstream/k8s-events';
import { startKubeApiServer } from '../../../test/helpers/kube-api-server.ts';
import { tempDir } from '../../../test/helpers/tmp.ts';

const run = promisify(execFile);
const repoRoot = new URL('../../../', import.meta.url).pathname;

test('in-cluster credentials: service host/port from the environment, token and CA from the service account dir', async (t) => {
  const server = await startKubeApiServer(t, { nodes: [{ name: 'node-z', uid: 'uid-z' }] });
  const prefix = await server.writeServiceAccount();
  const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
  t.after(() => {
    for (const [k, v] of [['KUBERNETES_SERVICE_HOST', saved.host], ['KUBERNETES_SERVICE_PORT', saved.port]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  process.env.KUBERNETES_SERVICE_HOST = '127.0.0.1';
  process.env.KUBERNETES_SERVICE_PORT = String(server.port);
  const client = await loadKubeClient({ inClusterPathPrefix: prefix });
  const node = await client.readNode('node-z');
  assert.equal(node.uid, 'uid-z');
  assert.deepEqual(server.violations, [], 'the bearer token from the service account was sent');

  await assert.rejects(loadKubeClient({ inClusterPathPrefix: join(prefix, 'nowhere') }), (err: unknown) => isCode(err, ErrorCode.KUBERNETES_CONFIG) && /token/.test((err as Error).message));
  delete process.env.KUBERNETES_SERVICE_HOST;
  await assert.rejects(loadKubeClient({ inClusterPathPrefix: prefix }), (err: unknown) => isCode(err, ErrorCode.KUBERNETES_CONFIG) && /KUBERNETES_SERVICE_HOST/.test((err as Error).message));
});

test('kubeconfig problems and API failures carry codes', async (t) => {
  const dir = await tempDir(t);
  await assert.rejects(loadKubeClient({ kubeconfigPath: join(dir, 'missing') }), (err: unknown) => isCode(err, ErrorCode.KUBERNETES_CONFIG));
  const server = await startKubeApiServer(t);
  await assert.rejects(loadKubeClient({ kubeconfigPath: server.kubeconfigPath, context: 'nope' }), (err: unknown) => isCode(err, ErrorCode.KUBERNETES_CONFIG));
  await assert.rejects(loadKubeClient({ kubeconfigPath: server.kubeconfigPath, requestTimeoutMs: 0 }), (err: unknown) => isCode(err, ErrorCode.INVALID_OPTION));

  const client = await loadKubeClient({ kubeconfigPath: server.kubeconfigPath });
  await assert.rejects(client.readNode('absent'), (err: unknown) => isCode(err, ErrorCode.KUBERNETES_API) && (err as ImgstreamError).fields.status === 404);
  server.failWith(503);
  await assert.rejects(client.readNode('node-a'), (err: unknown) => isCode(err, ErrorCode.KUBERNETES_API) && (err as ImgstreamError).fields.retryable === true);
  server.failWith(undefined);
  await server.down();
  await assert.rejects(client.readNode('node-a'), (err: unknown) => {
    const e = err as ImgstreamError;
    return isCode(err, ErrorCode.KUBERNETES_API) && e.fields.status === undefined && e.fields.retryable === true && /ECONNREFUSED/.test(e.message);
  });
  const reason = new Error('stop');
  await assert.rejects(client.readNode('node-a', { signal: AbortSignal.abort(reason) }), (err) => err === reason);
});

test('without the optional peer, loadKubeClient rejects with IMGSTREAM_KUBERNETES_CLIENT_MISSING', async (t) => {
  const dir = await tempDir(t);
  // A module resolve hook that makes @kubernetes/client-node unresolvable, as when the peer is not installed.
  await writeFile(
    join(dir, 'hooks.mjs'),
    `export async function resolve(specifier, context, next) {
       if (specifier === '@kubernetes/client-node') {
         const err = new Error("Cannot find package '@kubernetes/client-node' imported from " + context.parentURL);
         err.code = 'ERR_MODULE_NOT_FOUND';
         throw err;
       }
       return next(specifier, context);
     }\n`,
  );
  await writeFile(join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister('./hooks.mjs', import.meta.url);\n`);
  const script = `
    import { loadKubeClient } from '@imgstream/k8s-events';
    try { await loadKubeClient({ kubeconfigPath: '/nonexistent' }); console.log(JSON.stringify({ ok: true })); }
    catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })); }`;
  const { stdout } = await run(
    process.execPath,
    ['--conditions=imgstream-source', '--import', 'tsx', '--import', pathToFileURL(join(dir, 'register.mjs')).href, '--input-type=module', '-e', script],
    { cwd: repoRoot, timeout: 60_000 },
  );
  const result = JSON.parse(stdout.trim().split('\n').at(-1) as string) as { code: string; message: string };
  assert.equal(result.code, 'IMGSTREAM_KUBERNETES_CLIENT_MISSING');
  assert.match(result.message, /npm install @kubernetes\/client-node@~1\.4\.0/);
});

function isCode(err: unknown, code: string): boolean {
  return err instanceof ImgstreamError && err.code === code;
}
