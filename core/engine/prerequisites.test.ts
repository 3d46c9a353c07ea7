import test from 'ava';
import type { Inventory, VmFacts } from '../contracts/vm.ts';
import { decide, evaluatePrerequisites, type QuiescingFacts } from './prerequisites.ts';

const vm = (over: Partial<VmFacts> = {}): VmFacts => ({
  id: 'v1', name: 'web01', host: 'hv1', driver: 'hv', clustered: false, configurationVersion: '9.0', generation: 2,
  guestOs: 'windows', state: 'running', checkpointType: 'production',
  integration: { vssRequestor: { enabled: true, running: true } }, disks: [], ...over,
});
const inv = (over: Partial<Inventory> = {}): Inventory => ({
  hosts: [{ name: 'hv1', osBuild: 20348, cluster: 'c1' }, { name: 'hv2', osBuild: 17763, cluster: 'c1' }],
  clusters: [{ name: 'c1', nodes: ['hv1', 'hv2'], functionalLevel: 10 }], vms: [], ...over,
});
const driverQ: QuiescingFacts = { driverQuiesces: true };
const cond = (r: ReturnType<typeof evaluatePrerequisites>, key: string) => r.conditions.find((c) => c.key === key)!;

test('all met: online via production checkpoint, each condition with its value', (t) => {
  const r = evaluatePrerequisites(vm(), inv(), driverQ);
  t.deepEqual(r.conditions.map((c) => [c.key, c.value, c.ok]), [
    ['state', 'running', true],
    ['checkpointType', 'production', true],
    ['configurationVersion', '9.0', true],
    ['hostBuild', '20348', true],
    ['guestQuiescable', 'VSS integration service enabled and running', true],
  ]);
  const d = decide(r, 'prefer', driverQ);
  t.like(d, { method: 'online', checkpoint: 'production', quiesce: 'driver', level: 'application' });
});

test('configuration version below 8.0', (t) => {
  const r = evaluatePrerequisites(vm({ configurationVersion: '5.0' }), inv(), driverQ);
  t.false(cond(r, 'configurationVersion').ok);
  t.like(decide(r, 'prefer', driverQ), { method: 'crash-consistent', checkpoint: 'standard' });
  t.is(decide(r, 'require', driverQ).reason,
    'online backup is not possible and policy "require" forbids falling back: VM configuration version: 5.0 (upgrade the VM configuration version (Update-VMVersion) while the VM is off)');
  t.true(cond(evaluatePrerequisites(vm({ configurationVersion: '8.0' }), inv(), driverQ), 'configurationVersion').ok);
  t.true(cond(evaluatePrerequisites(vm({ configurationVersion: '10.0' }), inv(), driverQ), 'configurationVersion').ok);
  t.false(cond(evaluatePrerequisites(vm({ configurationVersion: 'x' }), inv(), driverQ), 'configurationVersion').ok);
});

test('host build below 14393 (2012 R2) and unknown host', (t) => {
  const r = evaluatePrerequisites(vm(), inv({ hosts: [{ name: 'hv1', osBuild: 9600 }] }), driverQ);
  t.like(cond(r, 'hostBuild'), { value: '9600', ok: false });
  t.regex(decide(r, 'prefer', driverQ).reason, /fell back to a crash-consistent standard checkpoint \(policy "prefer"\) because host hv1 OS build: 9600 \(the host runs a Hyper-V older than 2016\)/);
  const u = evaluatePrerequisites(vm(), inv({ hosts: [] }), driverQ);
  t.like(cond(u, 'hostBuild'), { value: 'unknown', ok: false, detail: 'host "hv1" is not in the driver\'s inventory' });
});

test('clustered: every node >= 14393 and functional level >= 9', (t) => {
  const ok = evaluatePrerequisites(vm({ clustered: true, cluster: 'c1' }), inv(), driverQ);
  t.like(cond(ok, 'clusterNodes'), { value: 'hv1=20348, hv2=17763', ok: true });
  t.like(cond(ok, 'clusterFunctionalLevel'), { value: '10', ok: true });
  const mixed = evaluatePrerequisites(vm({ clustered: true, cluster: 'c1' }),
    inv({ hosts: [{ name: 'hv1', osBuild: 20348 }, { name: 'hv2', osBuild: 9600 }], clusters: [{ name: 'c1', nodes: ['hv1', 'hv2'], functionalLevel: 8 }] }), driverQ);
  t.like(cond(mixed, 'clusterNodes'), { ok: false, detail: 'node hv2 runs a build older than 14393 or is unknown' });
  t.like(cond(mixed, 'clusterFunctionalLevel'), { value: '8', ok: false });
  t.is(decide(mixed, 'require', driverQ).method, 'fail');
  const missing = evaluatePrerequisites(vm({ clustered: true, cluster: 'c9' }), inv(), driverQ);
  t.false(cond(missing, 'clusterNodes').ok);
});

test('guest quiescable: windows VSS service disabled / not running; linux VSS daemon', (t) => {
  const dis = evaluatePrerequisites(vm({ integration: { vssRequestor: { enabled: false, running: false } } }), inv(), driverQ);
  t.like(cond(dis, 'guestQuiescable'), { value: 'disabled', ok: false });
  const stopped = evaluatePrerequisites(vm({ integration: { vssRequestor: { enabled: true, running: false } } }), inv(), driverQ);
  t.like(cond(stopped, 'guestQuiescable'), { value: 'not running', ok: false });
  const lin = evaluatePrerequisites(vm({ guestOs: 'linux', integration: { vssDaemon: false } }), inv(), driverQ);
  t.like(cond(lin, 'guestQuiescable'), { value: 'VSS daemon absent', ok: false });
  const linOk = evaluatePrerequisites(vm({ guestOs: 'linux', integration: { vssDaemon: true } }), inv(), driverQ);
  t.true(cond(linOk, 'guestQuiescable').ok);
});

test('engine quiescing: needs a ready quiescer', (t) => {
  const none: QuiescingFacts = { driverQuiesces: false };
  const r = evaluatePrerequisites(vm({ guestOs: 'linux' }), inv(), none);
  t.like(cond(r, 'guestQuiescable'), { value: 'no quiescer', ok: false });
  const ready: QuiescingFacts = { driverQuiesces: false, quiescer: { name: 'fsfreeze', readiness: { ready: true, reason: 'agent answers' } } };
  const d = decide(evaluatePrerequisites(vm({ guestOs: 'linux' }), inv(), ready), 'prefer', ready);
  t.like(d, { method: 'online', checkpoint: 'standard', quiesce: 'engine' });
  const notReady: QuiescingFacts = { driverQuiesces: false, quiescer: { name: 'fsfreeze', readiness: { ready: false, reason: 'agent down' } } };
  t.is(decide(evaluatePrerequisites(vm(), inv(), notReady), 'require', notReady).method, 'fail');
});

test('states: off -> offline, saved/paused/saving/critical -> skip under every policy', (t) => {
  t.like(decide(evaluatePrerequisites(vm({ state: 'off' }), inv(), driverQ), 'require', driverQ), { method: 'offline', checkpoint: null, quiesce: 'none' });
  for (const state of ['saved', 'paused', 'saving', 'critical', 'starting'] as const) {
    for (const policy of ['require', 'prefer', 'crash'] as const) {
      const d = decide(evaluatePrerequisites(vm({ state }), inv(), driverQ), policy, driverQ);
      t.is(d.method, 'skip', `${state}/${policy}`);
    }
  }
});

test('policy crash never quiesces; checkpoints disabled fails', (t) => {
  t.like(decide(evaluatePrerequisites(vm(), inv(), driverQ), 'crash', driverQ), { method: 'crash-consistent', checkpoint: 'standard', quiesce: 'none' });
  const d = decide(evaluatePrerequisites(vm({ checkpointType: 'disabled' }), inv(), driverQ), 'prefer', driverQ);
  t.is(d.method, 'fail');
  t.regex(d.reason, /checkpoints are disabled/);
});

test('a condition added by a prerequisites tap counts', (t) => {
  const r = evaluatePrerequisites(vm(), inv(), driverQ);
  r.conditions.push({ key: 'custom', label: 'SAN snapshot licence', value: 'missing', required: 'present', ok: false });
  t.is(decide(r, 'prefer', driverQ).method, 'crash-consistent');
});
