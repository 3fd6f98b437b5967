import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { ErrorCode, ImgstreamError } from '../errors.js';

/**
 * Node has neither mknod(2) nor setxattr(2). imgstream calls the system tools instead, kept to a
 * few process starts per layer:
 *  - device nodes and FIFOs: `mknod` (coreutils), one call per node; layers rarely carry any;
 *  - overlay whiteouts: ONE `mknod NAME c 0 0` per layer, hard-linked to every whiteout path (a
 *    whiteout is any 0/0 character device; overlayfs does not care about the link count);
 *  - extended attributes (including `trusted.overlay.opaque=y`): ONE `setfattr -h --restore=FILE`
 *    per layer (Debian package `attr`), with the values hex-encoded.
 */

export function runTool(cmd: string, args: readonly string[], cwd?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, maxBuffer: 1024 * 1024 }, (err, _stdout, stderr) => {
      if (err === null) return resolve();
      const errno = (err as { code?: unknown }).code;
      const enospc = /No space left on device|Disk quota exceeded/i.test(String(stderr));
      reject(
        new ImgstreamError(enospc ? ErrorCode.DISK_FULL : ErrorCode.TOOL_FAILED, `${cmd} ${args.join(' ')} failed: ${String(stderr).trim() || err.message}`, {
          cause: err,
          tool: cmd,
          ...(errno === 'ENOENT' ? { hint: `install ${cmd}` } : {}),
        }),
      );
    });
  });
}

/** Creates a device node or FIFO (mode bits are applied by the caller). */
export function mknod(path: string, type: 'char' | 'block' | 'fifo', major = 0, minor = 0): Promise<void> {
  const t = type === 'char' ? 'c' : type === 'block' ? 'b' : 'p';
  return runTool('mknod', type === 'fifo' ? [path, t] : [path, t, String(major), String(minor)]);
}

export interface XattrOp {
  /** Path relative to `root`. */
  readonly path: string;
  readonly name: string;
  readonly value: Uint8Array;
}

/** Sets many extended attributes (without following symlinks) with one setfattr process. */
export async function setXattrs(root: string, ops: readonly XattrOp[], scriptPath: string): Promise<void> {
  if (ops.length === 0) return;
  const lines: string[] = [];
  let last: string | undefined;
  for (const op of ops) {
    if (op.path !== last) {
      lines.push('', `# file: ${quote(op.path === '' ? '.' : op.path)}`);
      last = op.path;
    }
    lines.push(`${quote(op.name)}=${op.value.byteLength === 0 ? '""' : '0x' + Buffer.from(op.value).toString('hex')}`);
  }
  await writeFile(scriptPath, lines.join('\n') + '\n');
  await runTool('setfattr', ['-h', `--restore=${scriptPath}`], root);
}

/** getfattr/setfattr dump quoting: every byte outside a safe set as a 3-digit octal escape. */
function quote(s: string): string {
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9/._+,:@%-]/.test(c) ? c : '\\' + byte.toString(8).padStart(3, '0');
  }
  return out;
}
