import test from 'ava';
import { TransientError } from '../../core/errors.ts';
import { createScript, deleteScript, diskShadowError, importScript, isNotFound, parseCreate } from './diskshadow.ts';

test('create script: persistent, transportable, metadata, the volume with its alias and provider', (t) => {
  t.is(createScript({ volumePath: 'D:', metadataPath: 'C:\\m\\a.cab', alias: 'stillpoint_j1', providerId: '3f900f90-00e9-440e-873a-96ca5eb079e5' }), [
    'set context persistent',
    'set option transportable',
    'set verbose off',
    'set metadata "C:\\m\\a.cab"',
    'begin backup',
    'add volume D:\\ alias stillpoint_j1 provider {3f900f90-00e9-440e-873a-96ca5eb079e5}',
    'create',
    'end backup',
    '',
  ].join('\n'));
});

test('import script: load the metadata, import, expose at a folder', (t) => {
  t.is(importScript({ metadataPath: 'C:\\m\\a.cab', shadowId: '6a1f3c5e-8b2d-4e7f-9a0c-1d3e5f7a9b2c', mountPath: 'C:\\mnt\\x' }),
    'set context persistent\nload metadata "C:\\m\\a.cab"\nimport\nexpose {6a1f3c5e-8b2d-4e7f-9a0c-1d3e5f7a9b2c} "C:\\mnt\\x"\n');
  t.is(deleteScript('{abc}'), 'delete shadows id {abc}\n');
});

test('create output without the alias line is a clear error', (t) => {
  t.throws(() => parseCreate('-> create\r\nsomething else', 'stillpoint_j1', 'vss volume d'), { message: /vss volume d: DiskShadow reported no shadow copy/ });
});

test('DiskShadow errors: known HRESULTs are named with what to do; busy ones are transient', (t) => {
  const e = diskShadowError('\t- Returned HRESULT: 8004230c\r\n\t- Error text: VSS_E_VOLUME_NOT_SUPPORTED', 1, 'create', 'vss volume d');
  t.regex(e.message, /HRESULT 0x8004230C VSS_E_VOLUME_NOT_SUPPORTED/);
  t.regex(e.message, /hardware provider/);
  t.true(diskShadowError('Returned HRESULT: 80042316', 1, 'create', 'w') instanceof TransientError);
  t.regex(diskShadowError('weird\r\nfailure', 5, 'create', 'w').message, /exit code 5.*weird \| failure/);
  t.true(isNotFound('Shadow copy ID: {x} not found.'));
  t.false(isNotFound('Number of shadow copies deleted: 1'));
});
