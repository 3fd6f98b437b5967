import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '@imgstream/core';
import { parseFilters, type FieldLookup } from '@imgstream/snapshotter';

const obj = (fields: Record<string, string>): FieldLookup => (path) => fields[path.join('.')];
const snap = obj({
  kind: 'committed',
  name: 'default/3/sha256:abc',
  parent: '',
  'labels.containerd.io/snapshot.ref': 'sha256:abc',
  'labels.a': 'x y',
});

test('containerd filter syntax: selectors, quoting, operators, any-of', () => {
  const cases: Array<[string[], boolean]> = [
    [[], true],
    [[''], true],
    [['kind==committed'], true],
    [['kind==active'], false],
    [['kind!=active'], true],
    [['missing!=x'], true],
    [['missing==""'], false],
    [['labels."containerd.io/snapshot.ref"==sha256:abc,parent==""'], true],
    [['labels."containerd.io/snapshot.ref"==sha256:abc,parent=="x"'], false],
    [['  kind == committed ,  name~=^default/[0-9]+/'], true],
    [['labels.a=="x y"'], true],
    [['labels.a==x'], false],
    [['labels.a'], true],
    [['labels.b'], false],
    [['name~=/sha256:[a-f]+$/'], true],
    [['name~=|^default|'], true],
    [['name=="default/3/sha256\\x3aabc"'], true],
    [['name=="default/3/sha256\\u003aabc"'], true],
    [['kind==view', 'kind==committed'], true],
    [['kind==view', 'kind==active'], false],
  ];
  for (const [filters, expected] of cases) assert.equal(parseFilters(filters)(snap), expected, JSON.stringify(filters));
});

test('malformed filters are IMGSTREAM_SNAPSHOT_INVALID_ARGUMENT', () => {
  for (const bad of ['kind==', 'kind=~x', 'kind===x', '==x', 'kind==x,', 'kind==x y', 'labels."unterminated==x', 'kind==/x/', 'name~=/(/', 'a.', 'name=="\\q"']) {
    assert.throws(() => parseFilters([bad]), { code: ErrorCode.SNAPSHOT_INVALID_ARGUMENT }, bad);
  }
});
