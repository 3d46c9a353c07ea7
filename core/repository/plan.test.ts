import test from 'ava';
import { normaliseRanges, planChunks, readGroups } from './data.ts';
import type { Extent } from '../contracts/reader.ts';

test('normaliseRanges sorts, clamps and merges', (t) => {
  t.deepEqual(normaliseRanges([{ offset: 50, length: 10 }, { offset: 0, length: 10 }, { offset: 5, length: 10 }, { offset: 95, length: 20 }, { offset: 200, length: 5 }], 100), [
    { offset: 0, length: 15 },
    { offset: 50, length: 10 },
    { offset: 95, length: 5 },
  ]);
});

test('planChunks: full read visits chunks that hold data, with the data parts; others are zero', (t) => {
  const alloc: Extent[] = [
    { offset: 0, length: 100, kind: 'data' },
    { offset: 100, length: 250, kind: 'zero' },
    { offset: 350, length: 60, kind: 'data' },
  ];
  const zeros: number[] = [];
  const work = [...planChunks(100, 410, alloc, null, (i) => zeros.push(i))];
  t.deepEqual(work.map((w) => w.index), [0, 3, 4]);
  t.deepEqual(zeros, [1, 2]);
  t.deepEqual(work[1], { index: 3, start: 300, length: 100, parts: [{ offset: 350, length: 50 }] });
  t.deepEqual(work[2], { index: 4, start: 400, length: 10, parts: [{ offset: 400, length: 10 }] });
});

test('planChunks: incremental visits only chunks touched by changed ranges, once each', (t) => {
  const alloc: Extent[] = [{ offset: 0, length: 1000, kind: 'data' }];
  const zeros: number[] = [];
  const work = [...planChunks(100, 1000, alloc, [{ offset: 150, length: 100 }, { offset: 250, length: 1 }, { offset: 990, length: 10 }], (i) => zeros.push(i))];
  t.deepEqual(work.map((w) => w.index), [1, 2, 9]);
  t.deepEqual(zeros, []);
});

test('planChunks: a changed chunk that is now unallocated becomes zero', (t) => {
  const alloc: Extent[] = [{ offset: 0, length: 200, kind: 'data' }, { offset: 200, length: 200, kind: 'zero' }];
  const zeros: number[] = [];
  const work = [...planChunks(100, 400, alloc, [{ offset: 150, length: 150 }], (i) => zeros.push(i))];
  t.deepEqual(work.map((w) => w.index), [1]);
  t.deepEqual(zeros, [2]);
});

test('readGroups: neighbours lying whole in data are read together, up to the byte limit; partly filled chunks alone', (t) => {
  const alloc: Extent[] = [
    { offset: 0, length: 650, kind: 'data' },
    { offset: 650, length: 350, kind: 'zero' },
    { offset: 1000, length: 300, kind: 'data' },
  ];
  const work = planChunks(100, 1300, alloc, [{ offset: 0, length: 700 }, { offset: 1000, length: 300 }], () => undefined);
  const groups = [...readGroups(work, 300)].map((g) => g.map((w) => w.index));
  // 0..5 whole (3 per group at most), 6 partly data (alone), 10..12 whole but not next to 5.
  t.deepEqual(groups, [[0, 1, 2], [3, 4, 5], [6], [10, 11, 12]]);
  t.deepEqual([...readGroups(planChunks(100, 300, [{ offset: 0, length: 300, kind: 'data' }], null, () => undefined), 100)].map((g) => g.length), [1, 1, 1]);
});
