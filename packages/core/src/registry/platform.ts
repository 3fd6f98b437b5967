import { ErrorCode, ImgstreamError } from '../errors.js';

/** An OCI platform (the `platform` object of an index entry). */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

const NODE_ARCH: Readonly<Record<string, string>> = Object.freeze({
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
});

const NODE_OS: Readonly<Record<string, string>> = Object.freeze({ win32: 'windows', sunos: 'solaris' });

/** Maps Node's `process.arch` / `process.platform` names to OCI platform names. */
export function platformFromNode(arch: string, nodePlatform: string, armVersion?: string): Platform {
  const architecture = NODE_ARCH[arch] ?? arch;
  const os = NODE_OS[nodePlatform] ?? nodePlatform;
  const p: Platform = { os, architecture };
  if (architecture === 'arm64') p.variant = 'v8';
  if (architecture === 'arm') p.variant = `v${armVersion ?? '7'}`;
  return p;
}

/** The platform of the running host, in OCI names (`x64` is `amd64`, `arm64` is `arm64/v8`). */
export function hostPlatform(): Platform {
  const armVersion = (process.config.variables as unknown as Record<string, unknown>).arm_version;
  return platformFromNode(process.arch, process.platform, typeof armVersion === 'string' ? armVersion : undefined);
}

/** Parses `os/arch[/variant]`; throws IMGSTREAM_INVALID_OPTION. */
export function parsePlatform(text: string): Platform {
  const parts = text.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9._-]+$/.test(p))) {
    throw new ImgstreamError(ErrorCode.INVALID_OPTION, `invalid platform ${JSON.stringify(text)}: expected os/arch[/variant]`, { option: 'platform' });
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return normalizePlatform(variant === undefined ? { os, architecture } : { os, architecture, variant });
}

/** `os/arch[/variant]` */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** Normalises aliases (`aarch64` is `arm64`, `x86_64` is `amd64`, arm64's default variant is v8). */
export function normalizePlatform(p: Platform): Platform {
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase();
  if (architecture === 'aarch64') architecture = 'arm64';
  if (architecture === 'x86_64' || architecture === 'x86-64') architecture = 'amd64';
  if (architecture === 'i386') architecture = '386';
  if (architecture === 'armhf') [architecture, variant] = ['arm', 'v7'];
  if (architecture === 'armel') [architecture, variant] = ['arm', 'v6'];
  if (architecture === 'arm64' && (variant === undefined || variant === '' || variant === '8')) variant = 'v8';
  if (architecture === 'arm' && variant !== undefined && /^[5-8]$/.test(variant)) variant = `v${variant}`;
  const out: Platform = { ...p, os: p.os.toLowerCase(), architecture };
  if (variant !== undefined && variant !== '') out.variant = variant;
  else delete out.variant;
  return out;
}

/**
 * How well `candidate` satisfies `wanted`: -1 when it does not, higher is better. OS and
 * architecture must be equal; a wanted variant must match exactly (arm64 treats none as v8); for
 * arm an older variant is acceptable (a v7 host runs v6 images) but scores lower.
 */
export function platformScore(candidate: Platform, wanted: Platform): number {
  const c = normalizePlatform(candidate);
  const w = normalizePlatform(wanted);
  if (c.os !== w.os || c.architecture !== w.architecture) return -1;
  if (w.variant === undefined) return c.variant === undefined ? 3 : 2;
  if (c.variant === w.variant) return 3;
  if (c.variant === undefined) return 1;
  if (c.architecture === 'arm') {
    const cv = Number(c.variant.slice(1));
    const wv = Number(w.variant.slice(1));
    if (Number.isFinite(cv) && Number.isFinite(wv) && cv < wv) return 1 + cv / 10;
  }
  return -1;
}
