import type { QuiesceReadiness } from '../contracts/quiescer.ts';
import type { Inventory, VmFacts } from '../contracts/vm.ts';
import type { ConsistencyPolicy, Decision, PrerequisiteCondition, PrerequisiteReport } from './types.ts';

/** Hyper-V Server 2016 = build 14393: the first with production checkpoints. */
export const MIN_HOST_BUILD = 14393;
/** Configuration version 8.0 = the first with production checkpoints. */
export const MIN_CONFIGURATION_VERSION = '8.0';
/** Cluster functional level 9 = Windows Server 2016. */
export const MIN_CLUSTER_FUNCTIONAL_LEVEL = 9;

/** Conditions that are about whether a checkpoint can be taken at all (not about quiescing). */
const CHECKPOINT_CONDITIONS = new Set(['state', 'checkpointType']);

/** How the guest would be quiesced, as the engine found out before evaluating. */
export interface QuiescingFacts {
  /** The driver quiesces during a production checkpoint (`HypervisorDriver.quiescesOnCheckpoint`). */
  driverQuiesces: boolean;
  /** The quiescer `resolveQuiescer` returned for the VM, with its readiness. */
  quiescer?: { name: string; readiness: QuiesceReadiness };
}

function parseVersion(v: string): [number, number] | null {
  const m = /^(\d+)\.(\d+)$/.exec(v.trim());
  return m ? [Number(m[1]), Number(m[2])] : null;
}

function versionAtLeast(v: [number, number], min: string): boolean {
  const [a, b] = parseVersion(min)!;
  return v[0] > a || (v[0] === a && v[1] >= b);
}

function guestIntegration(vm: VmFacts): { ok: boolean; value: string; detail: string } {
  if (vm.guestOs === 'windows') {
    const r = vm.integration.vssRequestor;
    if (!r) return { ok: false, value: 'unknown', detail: 'the driver did not report the VSS integration service ("Backup (volume shadow copy)")' };
    if (!r.enabled) return { ok: false, value: 'disabled', detail: 'the VSS integration service ("Backup (volume shadow copy)") is disabled; enable it in the VM settings' };
    if (!r.running) return { ok: false, value: 'not running', detail: 'the VSS integration service is enabled but not running in the guest; start the Hyper-V Volume Shadow Copy Requestor service' };
    return { ok: true, value: 'VSS integration service enabled and running', detail: '' };
  }
  if (vm.integration.vssDaemon === undefined) return { ok: false, value: 'unknown', detail: 'the driver did not report whether the Hyper-V VSS daemon runs in the guest' };
  if (!vm.integration.vssDaemon) return { ok: false, value: 'VSS daemon absent', detail: 'the Hyper-V VSS daemon (hv_vss_daemon) is not present in the guest; install the hyperv-daemons package' };
  return { ok: true, value: 'Hyper-V VSS daemon present', detail: '' };
}

/** Step 1 of DESIGN.md: every prerequisite condition of one VM, with its value. Pure; no I/O. */
export function evaluatePrerequisites(vm: VmFacts, inventory: Inventory, quiescing: QuiescingFacts): PrerequisiteReport {
  const conditions: PrerequisiteCondition[] = [];

  const running = vm.state === 'running';
  conditions.push({
    key: 'state', label: 'VM state', value: vm.state, required: 'running or off',
    ok: running || vm.state === 'off',
    detail: running || vm.state === 'off' ? undefined : `no checkpoint can be taken while the VM is ${vm.state}`,
  });
  conditions.push({
    key: 'checkpointType', label: 'checkpoint type', value: vm.checkpointType, required: 'not disabled',
    ok: vm.checkpointType !== 'disabled',
    detail: vm.checkpointType === 'disabled' ? 'checkpoints are disabled on the VM; set its checkpoint type to production' : undefined,
  });

  const version = parseVersion(vm.configurationVersion);
  conditions.push({
    key: 'configurationVersion', label: 'VM configuration version', value: vm.configurationVersion,
    required: `>= ${MIN_CONFIGURATION_VERSION}`,
    ok: version !== null && versionAtLeast(version, MIN_CONFIGURATION_VERSION),
    detail: version === null ? `"${vm.configurationVersion}" is not a "major.minor" version`
      : versionAtLeast(version, MIN_CONFIGURATION_VERSION) ? undefined : 'upgrade the VM configuration version (Update-VMVersion) while the VM is off',
  });

  const host = inventory.hosts.find((h) => h.name === vm.host);
  conditions.push({
    key: 'hostBuild', label: `host ${vm.host} OS build`, value: host ? String(host.osBuild) : 'unknown',
    required: `>= ${MIN_HOST_BUILD} (Hyper-V Server 2016)`,
    ok: !!host && host.osBuild >= MIN_HOST_BUILD,
    detail: !host ? `host "${vm.host}" is not in the driver's inventory` : host.osBuild >= MIN_HOST_BUILD ? undefined : 'the host runs a Hyper-V older than 2016',
  });

  if (vm.clustered) {
    const cluster = inventory.clusters.find((c) => c.name === vm.cluster);
    if (!cluster) {
      conditions.push({
        key: 'clusterNodes', label: `cluster ${vm.cluster ?? '(unnamed)'} nodes`, value: 'unknown', required: `every node >= ${MIN_HOST_BUILD}`,
        ok: false, detail: `the VM is clustered but cluster "${vm.cluster ?? ''}" is not in the driver's inventory`,
      });
      conditions.push({
        key: 'clusterFunctionalLevel', label: `cluster ${vm.cluster ?? '(unnamed)'} functional level`, value: 'unknown',
        required: `>= ${MIN_CLUSTER_FUNCTIONAL_LEVEL}`, ok: false, detail: 'cluster not in the inventory',
      });
    } else {
      const nodes = cluster.nodes.map((n) => ({ name: n, build: inventory.hosts.find((h) => h.name === n)?.osBuild }));
      const old = nodes.filter((n) => n.build === undefined || n.build < MIN_HOST_BUILD);
      conditions.push({
        key: 'clusterNodes', label: `cluster ${cluster.name} nodes`,
        value: nodes.map((n) => `${n.name}=${n.build ?? 'unknown'}`).join(', '), required: `every node >= ${MIN_HOST_BUILD}`,
        ok: old.length === 0,
        detail: old.length === 0 ? undefined : `node${old.length > 1 ? 's' : ''} ${old.map((n) => n.name).join(', ')} run${old.length > 1 ? '' : 's'} a build older than ${MIN_HOST_BUILD} or ${old.length > 1 ? 'are' : 'is'} unknown`,
      });
      conditions.push({
        key: 'clusterFunctionalLevel', label: `cluster ${cluster.name} functional level`, value: String(cluster.functionalLevel),
        required: `>= ${MIN_CLUSTER_FUNCTIONAL_LEVEL}`, ok: cluster.functionalLevel >= MIN_CLUSTER_FUNCTIONAL_LEVEL,
        detail: cluster.functionalLevel >= MIN_CLUSTER_FUNCTIONAL_LEVEL ? undefined : 'raise the cluster functional level (Update-ClusterFunctionalLevel) once every node runs 2016 or later',
      });
    }
  }

  const integration = guestIntegration(vm);
  const q = quiescing.quiescer;
  if (quiescing.driverQuiesces) {
    const ready = !q || q.readiness.ready;
    conditions.push({
      key: 'guestQuiescable', label: `${vm.guestOs} guest quiescing`,
      value: q ? `${integration.value}; quiescer ${q.name}: ${q.readiness.reason}` : integration.value,
      required: vm.guestOs === 'windows' ? 'VSS integration service enabled and running' : 'Hyper-V VSS daemon present',
      ok: integration.ok && ready,
      detail: !integration.ok ? integration.detail : !ready ? `quiescer ${q!.name}: ${q!.readiness.reason}` : undefined,
    });
  } else {
    conditions.push({
      key: 'guestQuiescable', label: `${vm.guestOs} guest quiescing`,
      value: q ? `quiescer ${q.name}: ${q.readiness.reason}` : 'no quiescer',
      required: `a ready quiescer for ${vm.guestOs} guests`,
      ok: !!q && q.readiness.ready,
      detail: !q ? `no quiescer plugin serves this ${vm.guestOs} guest (driver "${vm.driver}" does not quiesce by itself); add one to the config's plugins`
        : q.readiness.ready ? undefined : `quiescer ${q.name}: ${q.readiness.reason}`,
    });
  }

  return { vm, conditions };
}

function describe(c: PrerequisiteCondition): string {
  return c.detail ? `${c.label}: ${c.value} (${c.detail})` : `${c.label}: ${c.value} (needs ${c.required})`;
}

/** The method a backup uses for the VM, following the job's consistency policy, and why. Pure. */
export function decide(report: PrerequisiteReport, policy: ConsistencyPolicy, quiescing: QuiescingFacts): Decision {
  const { vm } = report;
  const byKey = (k: string) => report.conditions.find((c) => c.key === k);
  const none = { checkpoint: null, quiesce: 'none' } as const;

  if (vm.state === 'off') {
    return { ...none, method: 'offline', level: 'application',
      reason: 'the VM is off: its disks are consistent as they are, backed up from its current chain without a checkpoint' };
  }
  const state = byKey('state');
  if (vm.state !== 'running' || (state && !state.ok)) {
    return { ...none, method: 'skip', level: 'crash',
      reason: `the VM is ${vm.state}: no checkpoint can be taken in this state (not forced); back it up once it is running or off` };
  }
  const cpType = byKey('checkpointType');
  if (cpType && !cpType.ok) {
    return { ...none, method: 'fail', level: 'crash', reason: describe(cpType) };
  }
  if (policy === 'crash') {
    return { method: 'crash-consistent', checkpoint: 'standard', quiesce: 'none', level: 'crash',
      reason: 'consistency policy "crash": standard checkpoint, the guest is not quiesced' };
  }
  const failed = report.conditions.filter((c) => !CHECKPOINT_CONDITIONS.has(c.key) && !c.ok);
  if (failed.length === 0) {
    if (quiescing.driverQuiesces) {
      return { method: 'online', checkpoint: 'production', quiesce: 'driver', level: 'application',
        reason: `production checkpoint: every prerequisite is met, the guest is quiesced by the hypervisor (${byKey('guestQuiescable')?.value ?? 'guest quiescable'})` };
    }
    return { method: 'online', checkpoint: 'standard', quiesce: 'engine', level: 'application',
      reason: `every prerequisite is met: the guest is frozen by quiescer ${quiescing.quiescer?.name ?? '?'} around a standard checkpoint` };
  }
  const why = failed.map(describe).join('; ');
  if (policy === 'require') {
    return { ...none, method: 'fail', level: 'crash', reason: `online backup is not possible and policy "require" forbids falling back: ${why}` };
  }
  return { method: 'crash-consistent', checkpoint: 'standard', quiesce: 'none', level: 'crash',
    reason: `fell back to a crash-consistent standard checkpoint (policy "prefer") because ${why}` };
}
