// Realistic test data: 21 resources of several types (nodes, VMs,
// containers, storage, a Docker host and a backup server) sampled every 15 s
// over the last 3 hours, with VM 101 stopped for 20 minutes (a gap) within
// the last hour and VM 109 stopped for the last 40 minutes. Ids are the
// Proxmox collector's (guests by VMID); guests, nodes and storage have the
// names, nodes and tags it records (the Docker host and the backup server
// have none, and show their ids).

export const STEP_MS = 15_000;
export const HOURS = 3;
/** VM 101 is stopped between these offsets from now (ms): no points at all. */
export const GAP = { id: 'pve1:101', type: 'vm', from: 45 * 60_000, to: 25 * 60_000 };
/** VM 109 has had no points for this long (ms): stopped. */
export const STOPPED = { id: 'pve1:109', type: 'vm', for: 40 * 60_000 };

const VM_NAMES = { 101: 'web01', 102: 'web02', 103: 'db01', 104: 'build01', 105: 'mail01', 106: 'cache01', 107: 'ci-runner', 108: 'monitor' };
const VM_TAGS = { 101: ['prod', 'web'], 102: ['prod', 'web'], 103: ['prod'] };
const CT_NAMES = { 201: 'dns', 202: 'proxy', 203: 'git', 204: 'wiki', 205: 'backup-agent' };

export const RESOURCES = [
  ...['node1', 'node2', 'node3'].map((n, i) => ({ type: 'node', id: `pve1:${n}`, meta: { name: n, status: 'online' }, base: { cpu: 25 + i * 12, memory: 55 + i * 6, disk: 38 + i * 9 }, metrics: ['cpu', 'memory', 'disk', 'netin', 'netout'] })),
  ...[101, 102, 103, 104, 105, 106, 107, 108].map((vmid, i) => ({
    type: 'vm',
    id: `pve1:${vmid}`,
    meta: { name: VM_NAMES[vmid], node: `node${(i % 3) + 1}`, tags: VM_TAGS[vmid] || [] },
    base: { cpu: vmid === 104 ? 93 : vmid === 107 ? 84 : 8 + i * 7, memory: vmid === 105 ? 79 : vmid === 106 ? 88 : 30 + i * 5, disk: vmid === 103 ? 83 : 20 + i * 6 },
    metrics: ['cpu', 'memory', 'disk', 'diskread', 'diskwrite', 'netin', 'netout'],
  })),
  { type: 'vm', id: STOPPED.id, meta: { name: 'batch', node: 'node3' }, base: { cpu: 12, memory: 40, disk: 30 }, metrics: ['cpu', 'memory', 'disk'] },
  ...[201, 202, 203, 204, 205].map((ctid, i) => ({
    type: 'container',
    id: `pve1:${ctid}`,
    meta: { name: CT_NAMES[ctid], node: `node${(i % 3) + 1}` },
    base: { cpu: 3 + i * 9, memory: 20 + i * 12, disk: 15 + i * 14 },
    metrics: ['cpu', 'memory', 'disk', 'netin', 'netout'],
  })),
  { type: 'storage', id: 'pve1:node1:local', meta: { name: 'local', node: 'node1' }, base: { disk: 41 }, metrics: ['disk'] },
  { type: 'storage', id: 'pve1:node1:local-lvm', meta: { name: 'local-lvm', node: 'node1' }, base: { disk: 77 }, metrics: ['disk'] },
  { type: 'storage', id: 'pve1:cephpool', meta: { name: 'cephpool' }, base: { disk: 86 }, metrics: ['disk'] },
  { type: 'dockerHost', id: 'docker1', base: { cpu: 17, memory: 48, disk: 62 }, metrics: ['cpu', 'memory', 'disk'] },
  { type: 'pbs', id: 'backup1', base: { cpu: 6, memory: 35 }, metrics: ['cpu', 'memory'] },
];

/** The metadata of every resource that has some, as the write API's `resources` take it. */
export function resourceRecords() {
  return RESOURCES.filter((r) => r.meta).map((r) => ({ resourceType: r.type, resourceId: r.id, instance: 'pve1', ...r.meta }));
}

/** Deterministic pseudo-random numbers (mulberry32). */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const RATE_BASE = { diskread: 2.5e6, diskwrite: 1.2e6, netin: 4e5, netout: 9e5 };

/** Every point, as the write API takes them, for data ending at `now` (Unix ms). */
export function generate(now) {
  const end = Math.floor(now / STEP_MS) * STEP_MS;
  const start = end - HOURS * 3600_000;
  const out = [];
  RESOURCES.forEach((r, ri) => {
    r.metrics.forEach((metric, mi) => {
      const rand = rng(ri * 97 + mi * 13 + 1);
      const base = r.base[metric] ?? RATE_BASE[metric] ?? 10;
      const percent = ['cpu', 'memory', 'disk'].includes(metric);
      let walk = 0;
      for (let t = start; t <= end; t += STEP_MS) {
        const ago = end - t;
        if (r.id === GAP.id && ago <= GAP.from && ago >= GAP.to) continue;
        if (r.id === STOPPED.id && ago < STOPPED.for) continue;
        const phase = (t / 3600_000) * Math.PI * 2;
        walk = walk * 0.97 + (rand() - 0.5) * (percent ? 2.2 : 0.25);
        let value;
        if (percent) {
          const swing = metric === 'disk' ? 0.4 : metric === 'memory' ? 3 : 6;
          value = base + Math.sin(phase + ri) * swing + walk * (metric === 'disk' ? 0.2 : 1) + (metric === 'cpu' ? (rand() - 0.5) * 5 : 0);
          if (metric === 'disk') value = base + ((start - t) / (HOURS * 3600_000)) * -0.6 + walk * 0.1;
          // Resources placed in a threshold band (base >= 75 %) stay in it
          // whatever the time of day, so colour checks are deterministic.
          if (base >= 75) value = base + (rand() - 0.5) * 2;
          value = Math.max(0, Math.min(100, value));
        } else {
          const burst = rand() < 0.03 ? 4 + rand() * 6 : 1;
          value = Math.max(0, base * (1 + 0.5 * Math.sin(phase * 2 + mi) + walk) * burst);
        }
        out.push({ resourceType: r.type, resourceId: r.id, metric, value: Math.round(value * 100) / 100, timestamp: t });
      }
    });
  });
  return out;
}

/**
 * A fleet of `n` resources x 4 metrics (cpu, memory, disk, netin) at
 * scale: nodes, VMs, containers and storage in a cluster's proportions,
 * each with a name and node, `points` samples 5 minutes apart ending at
 * `now`. One VM is named `NEEDLE` (and tagged `findme`): a search finds it.
 */
export const NEEDLE = 'needle-db';
export function scaleFleet(n, now, points = 6) {
  const end = Math.floor(now / 300_000) * 300_000;
  const nodes = Math.max(1, Math.round(n / 200));
  const storage = Math.round(n / 200);
  const containers = Math.round(n / 10);
  const vms = n - nodes - storage - containers;
  const resources = [];
  const pad = (i, w) => String(i).padStart(w, '0');
  for (let i = 1; i <= nodes; i++) resources.push({ resourceType: 'node', resourceId: `pve1:node${i}`, name: `node${i}`, status: 'online' });
  for (let i = 0; i < vms; i++) {
    const node = `node${(i % nodes) + 1}`;
    const name = i === 4242 ? NEEDLE : `vm-${pad(i, 5)}`;
    resources.push({ resourceType: 'vm', resourceId: `pve1:${1000 + i}`, name, node, tags: i === 4242 ? ['findme'] : [] });
  }
  for (let i = 0; i < containers; i++) resources.push({ resourceType: 'container', resourceId: `pve1:${100000 + i}`, name: `ct-${pad(i, 4)}`, node: `node${(i % nodes) + 1}` });
  for (let i = 0; i < storage; i++) resources.push({ resourceType: 'storage', resourceId: `pve1:store${i}`, name: `store-${pad(i, 3)}` });
  const out = [];
  resources.forEach((r, ri) => {
    for (const [mi, metric] of ['cpu', 'memory', 'disk', 'netin'].entries()) {
      if (r.resourceType === 'storage' && metric !== 'disk') continue;
      for (let k = points - 1; k >= 0; k--) {
        const value = metric === 'netin' ? 1000 * ((ri + k) % 50) : ((ri * 7 + mi * 13 + k * 3) % 90) + 5;
        out.push({ resourceType: r.resourceType, resourceId: r.resourceId, metric, value, timestamp: end - k * 300_000 });
      }
    }
  });
  return { resources: resources.map((r) => ({ instance: 'pve1', ...r })), points: out };
}
