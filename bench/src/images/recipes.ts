/**
 * The benchmark's images, described as data. A layer is the dependency closure of some Debian
 * packages (minus what earlier layers have), an npm project installed from a committed lock
 * file, or literal files. Builds are reproducible: fixed mtimes, sorted entries, root owner,
 * `gzip -n`; the only moving part is the Debian archive's candidate versions, recorded in the
 * build's meta.json.
 */
export type LayerRecipe =
  | {
      readonly name: string;
      readonly debs: readonly string[];
      /** Symlinks to add (path -> target), e.g. what `update-alternatives` would make in postinst. */
      readonly symlinks?: Readonly<Record<string, string>>;
    }
  | { readonly name: string; readonly npmProject: string; readonly into: string }
  /** Literal files: path -> content, or `{ copyFrom }` a host file (mode kept). */
  | { readonly name: string; readonly files: Readonly<Record<string, string | { readonly copyFrom: string }>> };

export interface ImageRecipe {
  readonly name: string;
  readonly tag: string;
  readonly description: string;
  readonly layers: readonly LayerRecipe[];
  /** The entrypoint; it prints READY when the workload is up. */
  readonly cmd: readonly string[];
  readonly env: readonly string[];
  /** Compile Python sources to .pyc (unchecked-hash) the way Debian's postinst would. */
  readonly compilePython: boolean;
}

const PATH_ENV = 'PATH=/usr/local/bin:/usr/bin:/bin';

const BASE_DEBS = ['libc6', 'libstdc++6', 'zlib1g', 'libssl3', 'tzdata'];

const PYTHON_MAIN = `import time
t0 = time.monotonic()
import numpy, scipy, scipy.linalg, scipy.sparse, scipy.optimize, scipy.stats, scipy.signal, pandas
df = pandas.DataFrame({"x": numpy.arange(1000)})
assert int(df.x.sum()) == 499500
print("READY", f"{time.monotonic() - t0:.3f}", flush=True)
`;

export const PYTHON_IMAGE: ImageRecipe = {
  name: 'python-scipy',
  tag: '1',
  description: 'Python 3.11 with numpy, scipy and pandas from Debian 12; imports them and prints READY',
  layers: [
    { name: 'base', debs: BASE_DEBS },
    { name: 'python', debs: ['python3'] },
    {
      name: 'numpy-scipy',
      debs: ['libopenblas0-pthread', 'python3-numpy', 'python3-scipy'],
      symlinks: {
        'usr/lib/x86_64-linux-gnu/libblas.so.3': 'openblas-pthread/libblas.so.3',
        'usr/lib/x86_64-linux-gnu/liblapack.so.3': 'openblas-pthread/liblapack.so.3',
        'usr/lib/x86_64-linux-gnu/libopenblas.so.0': 'openblas-pthread/libopenblas.so.0',
      },
    },
    { name: 'pandas', debs: ['python3-pandas'] },
    { name: 'app', files: { 'app/main.py': PYTHON_MAIN } },
  ],
  cmd: ['/usr/bin/python3', '/app/main.py'],
  env: [PATH_ENV, 'PYTHONDONTWRITEBYTECODE=1'],
  compilePython: true,
};

const NODE_MAIN = `const t0 = process.hrtime.bigint();
const express = require('express');
require('lodash');
require('aws-sdk');
require('rxjs');
require('date-fns');
require('@babel/core');
require('typescript');
require('moment');
const app = express();
app.get('/', (_req, res) => res.send('ok'));
console.log('READY', (Number(process.hrtime.bigint() - t0) / 1e9).toFixed(3));
`;

export const NODE_IMAGE: ImageRecipe = {
  name: 'node-app',
  tag: '1',
  description: 'Node.js 18 (Debian 12) with a large node_modules (express, aws-sdk, typescript, babel, ...); requires them and prints READY',
  layers: [
    { name: 'base', debs: BASE_DEBS },
    { name: 'nodejs', debs: ['nodejs=18.20.4+dfsg-1~deb12u3'] },
    { name: 'node-modules', npmProject: 'bench/images/node-app', into: 'app' },
    { name: 'app', files: { 'app/main.js': NODE_MAIN } },
  ],
  cmd: ['/usr/bin/node', '/app/main.js'],
  env: [PATH_ENV, 'NODE_ENV=production'],
  compilePython: false,
};

/** One layer per library, like a Dockerfile with a RUN line each. */
const MANY_LAYER_LIBS = [
  ['python3-six', 'six'],
  ['python3-dateutil', 'dateutil'],
  ['python3-tz', 'pytz'],
  ['python3-idna', 'idna'],
  ['python3-urllib3', 'urllib3'],
  ['python3-requests', 'requests'],
  ['python3-yaml', 'yaml'],
  ['python3-markupsafe', 'markupsafe'],
  ['python3-jinja2', 'jinja2'],
  ['python3-click', 'click'],
  ['python3-attr', 'attr'],
  ['python3-pygments', 'pygments'],
  ['python3-docutils', 'docutils'],
  ['python3-babel', 'babel'],
  ['python3-sqlalchemy', 'sqlalchemy'],
  ['python3-cryptography', 'cryptography'],
  ['python3-lxml', 'lxml'],
  ['python3-markdown', 'markdown'],
  ['python3-psutil', 'psutil'],
  ['python3-simplejson', 'simplejson'],
  ['python3-toml', 'toml'],
  ['python3-packaging', 'packaging'],
  ['python3-msgpack', 'msgpack'],
  ['python3-setuptools', 'setuptools'],
] as const;

export const MANY_LAYER_IMAGE: ImageRecipe = {
  name: 'many-layers',
  tag: '1',
  description: `Python 3.11 plus ${MANY_LAYER_LIBS.length} libraries, one layer each; imports them all and prints READY`,
  layers: [
    { name: 'base', debs: BASE_DEBS },
    { name: 'python', debs: ['python3'] },
    ...MANY_LAYER_LIBS.map(([deb, mod]) => ({ name: mod, debs: [deb] })),
    {
      name: 'app',
      files: {
        'app/main.py': `import time\nt0 = time.monotonic()\n${MANY_LAYER_LIBS.map(([, m]) => `import ${m}`).join('\n')}\nprint("READY", f"{time.monotonic() - t0:.3f}", flush=True)\n`,
      },
    },
  ],
  cmd: ['/usr/bin/python3', '/app/main.py'],
  env: [PATH_ENV, 'PYTHONDONTWRITEBYTECODE=1'],
  compilePython: true,
};

export const IMAGES: readonly ImageRecipe[] = [PYTHON_IMAGE, NODE_IMAGE, MANY_LAYER_IMAGE];

export function imageByName(name: string): ImageRecipe {
  const r = IMAGES.find((i) => i.name === name);
  if (r === undefined) throw new Error(`unknown image ${JSON.stringify(name)} (known: ${IMAGES.map((i) => i.name).join(', ')})`);
  return r;
}
