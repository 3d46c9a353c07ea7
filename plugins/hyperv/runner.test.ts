import test from 'ava';
import { NotFoundError } from '../../core/errors.ts';
import { NodePowerShellRunner, findExecutable } from './node-powershell-runner.ts';
import { ENVELOPE_MARKER, PowerShellError, psString, unwrapOutput, wqlString, wrapScript } from './runner.ts';
import { asArray, CheckpointType, enumName, parseDate, VMState } from './ps-json.ts';

test('psString doubles single quotes (also typographic ones PowerShell treats as quotes)', (t) => {
  t.is(psString("O'Brien"), "'O''Brien'");
  t.is(psString('a\u2019b'), "'a\u2019\u2019b'");
  t.is(psString('$env:x `n'), "'$env:x `n'");
});

test('wqlString escapes backslash and quote for a WQL literal', (t) => {
  t.is(wqlString("Microsoft:AB\\CD'x"), "'Microsoft:AB\\\\CD\\'x'");
});

test('wrapScript adds -EnumsAsStrings only for PowerShell 7 and writes one marked line', (t) => {
  t.false(wrapScript('Get-VM', '5.1').includes('EnumsAsStrings'));
  t.true(wrapScript('Get-VM', '7').includes('-EnumsAsStrings'));
  t.true(wrapScript('Get-VM', '7').includes(ENVELOPE_MARKER));
});

test('unwrapOutput returns the value, throws PowerShellError for a failed script, and a clear error without a result line', (t) => {
  t.deepEqual(unwrapOutput(`WARNING: x\n${ENVELOPE_MARKER}{"ok":true,"value":[1,2]}\n`, 'here'), [1, 2]);
  t.is(unwrapOutput(`${ENVELOPE_MARKER}{"ok":true,"value":null}`, 'here'), null);
  const err = t.throws(() => unwrapOutput(`${ENVELOPE_MARKER}{"ok":false,"error":{"message":"boom","category":"ObjectNotFound"}}`, 'here'), { instanceOf: PowerShellError });
  t.is(err.record.category, 'ObjectNotFound');
  t.throws(() => unwrapOutput('garbage', 'host HV01'), { message: /host HV01: PowerShell wrote no result line/ });
});

test('dates: Windows PowerShell 5.1 /Date(ms)/ and PowerShell 7 ISO with offset give the same instant', (t) => {
  t.is(parseDate('/Date(1709630142318)/'), '2024-03-05T09:15:42.318Z');
  t.is(parseDate('2024-03-05T10:15:42.3180000+01:00'), '2024-03-05T09:15:42.318Z');
  t.is(parseDate('/Date(1709630142318+0100)/'), '2024-03-05T09:15:42.318Z');
  t.is(parseDate('yesterday'), undefined);
});

test('enums: number (5.1) or name (7), unknown values named in the error', (t) => {
  t.is(enumName({ State: 2 }, 'State', VMState, 'vm'), 'Running');
  t.is(enumName({ State: 'Running' }, 'State', VMState, 'vm'), 'Running');
  t.is(enumName({ T: 4 }, 'T', CheckpointType, 'vm'), 'ProductionOnly');
  t.throws(() => enumName({ State: 77 }, 'State', VMState, 'VM x'), { message: /VM x: unexpected State.*unknown value 77/ });
});

test('asArray undoes ConvertTo-Json collapsing one result to an object and none to null', (t) => {
  t.deepEqual(asArray(null), []);
  t.deepEqual(asArray({ a: 1 }), [{ a: 1 }]);
  t.deepEqual(asArray([1]), [1]);
});

test('node-powershell runner: importable, and a clear error when no PowerShell is found', (t) => {
  t.is(findExecutable('pwsh-that-does-not-exist', '/nonexistent'), undefined);
  const err = t.throws(() => new NodePowerShellRunner({ executable: 'pwsh', invocationTimeoutMs: 1000, where: 'drivers["hv"] (type hyperv)', path: '/nonexistent' }), { instanceOf: NotFoundError });
  t.regex(err.message, /drivers\["hv"\] \(type hyperv\): no PowerShell found: "pwsh" is not on PATH/);
  t.regex(err.message, /powershell\.executable/);
});

test('node-powershell runner: on this machine (no PowerShell) the default executable is reported missing', (t) => {
  if (findExecutable('pwsh') || findExecutable('powershell')) {
    t.log('a PowerShell is installed here; the missing-PowerShell path is covered by the test above');
    t.pass();
    return;
  }
  t.throws(() => new NodePowerShellRunner({ executable: 'auto', invocationTimeoutMs: 0, where: 'x' }), { instanceOf: NotFoundError });
});
