import test from 'ava';
import { LineDecoder, ProtocolError, encodeMessage, errorToInfo, parseCoordinatorMessage, parseProxyMessage } from './protocol.ts';
import { StillpointError } from '../../core/errors.ts';

test('the decoder joins lines split across chunks and splits chunks holding several lines', (t) => {
  const d = new LineDecoder();
  t.deepEqual(d.push(Buffer.from('{"a":')), []);
  t.is(d.pending, 5);
  t.deepEqual(d.push(Buffer.from('1}\n{"b":2}\r\n\n{"c"')), ['{"a":1}', '{"b":2}']);
  t.deepEqual(d.push(Buffer.from(':3}\n')), ['{"c":3}']);
  t.is(d.pending, 0);
});

test('the decoder drops an overlong line with an error and goes on with the next', (t) => {
  const d = new LineDecoder(10);
  t.deepEqual(d.push(Buffer.from('0123456789')), []);
  const out = d.push(Buffer.from('X\nshort\n'));
  t.is(out.length, 2);
  t.true(out[0] instanceof ProtocolError);
  t.regex((out[0] as ProtocolError).message, /longer than 10 bytes/);
  t.is(out[1], 'short');
});

test('a UTF-8 character split between chunks survives', (t) => {
  const d = new LineDecoder();
  const bytes = Buffer.from('"é"\n');
  t.deepEqual([...d.push(bytes.subarray(0, 2)), ...d.push(bytes.subarray(2))], ['"é"']);
});

test('messages round-trip and bad ones are refused with the field named', (t) => {
  const task = {
    type: 'task' as const, id: 't1', vm: { id: 'v', name: 'web' }, restorePoint: { id: 'rp' },
    repository: { config: { storage: { type: 'local' } } },
    disks: [{ diskId: 'SCSI 0:0', path: '/snap/a.vhdx', parentPaths: [], virtualSize: 1024, changed: null }],
  };
  const line = encodeMessage(task);
  t.true(line.endsWith('\n'));
  t.deepEqual(parseCoordinatorMessage(line.trim()), task);

  const bad = t.throws(() => parseCoordinatorMessage(JSON.stringify({ ...task, disks: [{ diskId: 'd', path: '', virtualSize: -1 }] })), { instanceOf: ProtocolError });
  t.is(bad!.id, 't1');
  t.regex(bad!.message, /coordinator message "task" is malformed: disks\.0\.path: .*disks\.0\.virtualSize/);
  t.throws(() => parseCoordinatorMessage('{oops'), { message: /coordinator message is not JSON/ });
  t.throws(() => parseCoordinatorMessage('{"type":"launch"}'), { message: /malformed: type/ });
  t.throws(() => parseProxyMessage('{"type":"done"}'), { message: /proxy message "done" is malformed: id/ });
  t.deepEqual(parseProxyMessage('{"type":"pong","seq":3}'), { type: 'pong', seq: 3 });
});

test('errors travel with their class, where and hint', (t) => {
  const info = errorToInfo(new StillpointError('disk missing', { where: 'VM web, disk SCSI 0:0', hint: 'rescan' }));
  t.deepEqual(info, { name: 'StillpointError', message: 'VM web, disk SCSI 0:0: disk missing. rescan', where: 'VM web, disk SCSI 0:0', hint: 'rescan' });
  t.deepEqual(errorToInfo('plain'), { name: 'Error', message: 'plain' });
});
