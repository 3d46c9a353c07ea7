import test from 'ava';
import { NotFoundError, StillpointError, TransientError } from '../../core/errors.ts';
import { PowerShellError } from './runner.ts';
import { mapPowerShellError, wmiCodeError } from './wmi.ts';
import { volumeOf } from './facts.ts';

test('WMI codes map to error classes with what to do', (t) => {
  t.true(wmiCodeError(32772, 'x', 'w') instanceof TransientError);
  t.true(wmiCodeError(32774, 'x', 'w') instanceof TransientError);
  t.true(wmiCodeError(32779, 'x', 'w') instanceof NotFoundError);
  t.regex(wmiCodeError(32775, 'creating', 'VM a').message, /VM a: creating failed: Invalid state for this operation \(32775\).*another checkpoint/);
  t.regex(wmiCodeError(32769, 'x', 'w').message, /Hyper-V Administrators/);
  t.regex(wmiCodeError(4711, 'x', 'w').message, /unknown error \(4711\).*Hyper-V-VMMS/);
});

test('PowerShell error records map to clear errors', (t) => {
  const pe = (r: ConstructorParameters<typeof PowerShellError>[0]) => new PowerShellError(r);
  t.true(mapPowerShellError(pe({ message: 'x', category: 'ObjectNotFound' }), 'op', 'w') instanceof NotFoundError);
  t.regex((mapPowerShellError(pe({ message: "The term 'Get-VM' is not recognized as a name of a cmdlet", fullyQualifiedErrorId: 'CommandNotFoundException' }), 'op', 'w') as Error).message, /Hyper-V-PowerShell/);
  t.regex((mapPowerShellError(pe({ message: 'denied', hresult: -2147024891 }), 'op', 'w') as Error).message, /Hyper-V Administrators/);
  t.true(mapPowerShellError(pe({ message: 'The RPC server is unavailable.', hresult: -2147023174 }), 'op', 'w') instanceof TransientError);
  t.true(mapPowerShellError(pe({ message: 'other' }), 'op', 'w') instanceof StillpointError);
  const plain = new Error('not PowerShell');
  t.is(mapPowerShellError(plain, 'op', 'w'), plain);
});

test('volumes: Cluster Shared Volume, SMB share, drive', (t) => {
  t.is(volumeOf('C:\\ClusterStorage\\Volume2\\vm\\a.vhdx'), 'C:\\ClusterStorage\\Volume2');
  t.is(volumeOf('\\\\fs01\\vms\\a\\a.vhdx'), '\\\\fs01\\vms');
  t.is(volumeOf('d:\\Hyper-V\\a.vhdx'), 'D:\\');
});
