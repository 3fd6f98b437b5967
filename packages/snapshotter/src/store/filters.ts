import { ErrorCode, ImgstreamError } from '@imgstream/core';

/**
 * containerd's filter language, as the List RPC receives it, e.g.
 * `labels."containerd.io/snapshot.ref"==sha256:abc,parent=="default/3/sha256:def"`.
 *
 *   filters   := any of several strings (a snapshot matches when any string matches)
 *   selectors := selector ("," selector)*             every selector must match
 *   selector  := fieldpath [ op value ]                without op: the field must be present
 *   fieldpath := field ("." field)*
 *   field     := [A-Za-z0-9_]+ | "double quoted"
 *   op        := "==" | "!=" | "~="                   ~= is a regular expression match
 *   value     := [^\s,]+ | "double quoted" | /alt quoted/ | |alt quoted|   (alt quotes only after ~=)
 */

/** Returns the value of a field path and whether it is present. */
export type FieldLookup = (path: readonly string[]) => string | undefined;

/** A compiled filter: true when the object behind `lookup` matches. */
export type Filter = (lookup: FieldLookup) => boolean;

type Operator = '==' | '!=' | '~=' | 'present';

interface Selector {
  readonly path: string[];
  readonly op: Operator;
  readonly value: string;
  readonly re?: RegExp;
}

/** Parses containerd filter strings; no strings (or only empty ones) match everything. */
export function parseFilters(filters: readonly string[]): Filter {
  const parsed = filters.filter((f) => f !== '').map(parseOne);
  if (parsed.length === 0) return () => true;
  return (lookup) => parsed.some((all) => all.every((sel) => matchSelector(sel, lookup)));
}

function matchSelector(sel: Selector, lookup: FieldLookup): boolean {
  const value = lookup(sel.path);
  switch (sel.op) {
    case 'present':
      return value !== undefined;
    case '==':
      return value !== undefined && value === sel.value;
    case '!=':
      return (value ?? '') !== sel.value;
    case '~=':
      return sel.re !== undefined && sel.re.test(value ?? '');
  }
}

function invalid(input: string, pos: number, message: string): ImgstreamError {
  return new ImgstreamError(ErrorCode.SNAPSHOT_INVALID_ARGUMENT, `invalid filter ${JSON.stringify(input)} at ${pos}: ${message}`, {
    filter: input,
  });
}

const isFieldChar = (c: string): boolean => /^[A-Za-z0-9_]$/.test(c);
const isQuote = (c: string): boolean => c === '"' || c === '/' || c === '|';
const isSpace = (c: string): boolean => /^\s$/.test(c);

class FilterParser {
  #pos = 0;
  constructor(private readonly input: string) {}

  parse(): Selector[] {
    const out = [this.#selector()];
    for (;;) {
      this.#skipSpace();
      if (this.#pos >= this.input.length) return out;
      if (this.input[this.#pos] !== ',') throw invalid(this.input, this.#pos, `unexpected ${JSON.stringify(this.input[this.#pos])}`);
      this.#pos++;
      out.push(this.#selector());
    }
  }

  #skipSpace(): void {
    while (this.#pos < this.input.length && isSpace(this.input[this.#pos]!)) this.#pos++;
  }

  #selector(): Selector {
    const path = [this.#field()];
    for (;;) {
      this.#skipSpace();
      if (this.input[this.#pos] !== '.') break;
      this.#pos++;
      path.push(this.#field());
    }
    this.#skipSpace();
    if (this.#pos >= this.input.length || this.input[this.#pos] === ',') return { path, op: 'present', value: '' };
    const op = this.#operator();
    const value = this.#value(op === '~=');
    if (op !== '~=') return { path, op, value };
    try {
      return { path, op, value, re: new RegExp(value) };
    } catch (err) {
      throw invalid(this.input, this.#pos, `bad regular expression: ${(err as Error).message}`);
    }
  }

  #field(): string {
    this.#skipSpace();
    const start = this.#pos;
    const c = this.input[this.#pos];
    if (c === '"') return this.#quoted('"');
    while (this.#pos < this.input.length && isFieldChar(this.input[this.#pos]!)) this.#pos++;
    if (this.#pos === start) throw invalid(this.input, start, 'expected a field name or a quoted field');
    return this.input.slice(start, this.#pos);
  }

  #operator(): Operator {
    const start = this.#pos;
    while (this.#pos < this.input.length && '=!~'.includes(this.input[this.#pos]!)) this.#pos++;
    const op = this.input.slice(start, this.#pos);
    if (op === '==' || op === '!=' || op === '~=') return op;
    throw invalid(this.input, start, op === '' ? 'expected an operator (==, !=, ~=)' : `unsupported operator ${op}`);
  }

  #value(allowAltQuotes: boolean): string {
    this.#skipSpace();
    const start = this.#pos;
    const c = this.input[this.#pos];
    if (c === undefined) throw invalid(this.input, start, 'expected a value');
    if (isQuote(c)) {
      if (c !== '"' && !allowAltQuotes) throw invalid(this.input, start, `quote ${c} is only allowed after ~=`);
      return this.#quoted(c);
    }
    if (c === ',' || c === '.') throw invalid(this.input, start, 'expected a value');
    while (this.#pos < this.input.length && this.input[this.#pos] !== ',' && !isSpace(this.input[this.#pos]!)) this.#pos++;
    return this.input.slice(start, this.#pos);
  }

  /** Reads a quoted string starting at the opening quote, Go escape rules. */
  #quoted(quote: string): string {
    const start = this.#pos;
    this.#pos++;
    let out = '';
    for (;;) {
      const c = this.input[this.#pos];
      if (c === undefined || c === '\n') throw invalid(this.input, start, 'quoted literal not terminated');
      this.#pos++;
      if (c === quote) return out;
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = this.input[this.#pos];
      this.#pos++;
      const simple: Record<string, string> = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' };
      if (e === undefined) throw invalid(this.input, start, 'quoted literal not terminated');
      if (e === quote) out += quote;
      else if (simple[e] !== undefined) out += simple[e];
      else if (/[0-7]/.test(e)) out += this.#digits(e, 8, 3);
      else if (e === 'x') out += this.#digits('', 16, 2);
      else if (e === 'u') out += this.#digits('', 16, 4);
      else if (e === 'U') out += this.#digits('', 16, 8);
      else throw invalid(this.input, this.#pos - 1, 'illegal escape sequence');
    }
  }

  #digits(first: string, base: number, count: number): string {
    let text = first;
    while (text.length < count) {
      const c = this.input[this.#pos];
      if (c === undefined || Number.isNaN(parseInt(c, base))) throw invalid(this.input, this.#pos, 'illegal numeric escape sequence');
      text += c;
      this.#pos++;
    }
    return String.fromCodePoint(parseInt(text, base));
  }
}

function parseOne(input: string): Selector[] {
  return new FilterParser(input).parse();
}
