/**
 * `wanas k8s`: runs the real CLI on the demo topology and validates every generated object against the
 * Kubernetes OpenAPI schema (kubernetes-models), then checks what the schema cannot: that the pieces fit
 * together (selectors, probes, ports, the topology in the ConfigMap, grace periods, security).
 */
import { parseTopology } from '@wanas/topology';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Service } from 'kubernetes-models/v1/Service';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { ROOT, WANAS_BIN } from './support/federation';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const MODELS: Record<string, new (o: Obj) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
};

function k8s(...args: string[]) {
  const r = spawnSync(process.execPath, [WANAS_BIN, 'k8s', ...args], { encoding: 'utf8', timeout: 30_000 });
  return { ...r, docs: r.status === 0 ? YAML.parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj) : [] };
}

const DEMO = path.join(ROOT, 'examples/demo.yaml');

describe('wanas k8s', () => {
  const run = k8s('--topology', DEMO, '--image', 'registry.example.com/wanas:1.0', '--namespace', 'vdi');
  const demo = YAML.parse(fs.readFileSync(DEMO, 'utf8')) as Obj;
  const pods: { site: string; pod: string; brokers: number }[] = demo.sites.flatMap((s: Obj) =>
    s.pods.map((p: Obj) => ({ site: s.name, pod: p.name, brokers: p.brokers.length })),
  );
  const of = (kind: string) => run.docs.filter((d) => d.kind === kind);

  it('writes a YAML stream of schema-valid objects', () => {
    expect(run.status).toBe(0);
    expect(run.docs.length).toBeGreaterThan(0);
    for (const d of run.docs) {
      const Model = MODELS[`${d.apiVersion}/${d.kind}`];
      if (!Model) throw new Error(`unexpected object ${d.apiVersion}/${d.kind}`);
      expect(() => new Model(d).validate()).not.toThrow();
      expect(d.metadata.name).toMatch(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/);
      if (d.kind !== 'Namespace') expect(d.metadata.namespace).toBe('vdi');
    }
    // The schema check is real: a broken object is refused.
    const bad = structuredClone(of('Deployment')[0]!);
    bad.spec.replicas = 'two';
    expect(() => new Deployment(bad).validate()).toThrow(/replicas/);
  });

  it('emits one Deployment (replicas = brokers), headless Service and PDB per pod, its state in PostgreSQL', () => {
    expect(of('Deployment')).toHaveLength(pods.length);
    for (const p of pods) {
      const name = `wanas-${p.site}-${p.pod}`;
      const dep = of('Deployment').find((d) => d.metadata.name === name)!;
      const svc = of('Service').find((d) => d.metadata.name === name)!;
      const pdb = of('PodDisruptionBudget').find((d) => d.metadata.name === name)!;
      expect(dep.spec.replicas).toBe(p.brokers);
      expect(svc.spec.clusterIP).toBe('None');
      expect(pdb.spec.maxUnavailable).toBe(1);
      const labels = dep.spec.template.metadata.labels;
      for (const sel of [dep.spec.selector.matchLabels, svc.spec.selector, pdb.spec.selector.matchLabels])
        expect(labels).toMatchObject(sel);
      // The Service selects this pod's replicas only.
      expect(svc.spec.selector).toMatchObject({ 'wanas.io/site': p.site, 'wanas.io/pod': p.pod });

      const spec = dep.spec.template.spec;
      const c = spec.containers[0];
      expect(c.image).toBe('registry.example.com/wanas:1.0');
      expect(c.args).toEqual(expect.arrayContaining(['--pod', `${p.site}/${p.pod}`, '--id', '$(POD_NAME)']));
      const port = (n: string) => c.ports.find((x: Obj) => x.name === n).containerPort;
      for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe])
        expect(probe.grpc.port).toBe(port('health'));
      expect(svc.spec.ports[0].port).toBe(port('grpc'));
      // Non-root, read-only root filesystem, nothing extra.
      expect(spec.securityContext.runAsNonRoot).toBe(true);
      expect(c.securityContext).toMatchObject({
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
      });
      expect(c.resources.requests).toEqual(
        expect.objectContaining({ cpu: expect.any(String), memory: expect.any(String) }),
      );
      expect(c.resources.limits.memory).toBeDefined();
      // Grace: preStop (leave DNS) + the broker's own --grace fit in terminationGracePeriodSeconds.
      const preStop = Number(c.lifecycle.preStop.exec.command[1]);
      const grace = Number(c.args[c.args.indexOf('--grace') + 1]) / 1000;
      expect(spec.terminationGracePeriodSeconds).toBeGreaterThan(preStop + grace);
      // Certificates from the pod's Secret; every mounted volume exists.
      const vol = (n: string) => spec.volumes.find((v: Obj) => v.name === n);
      expect(vol('tls').secret.secretName).toBe(`${name}-tls`);
      for (const m of c.volumeMounts) expect(vol(m.name)).toBeDefined();
      // The pod's state is in PostgreSQL (no shared file volume): the connection from the database Secret.
      expect(c.env).toContainEqual({
        name: 'PGPASSWORD',
        valueFrom: { secretKeyRef: { name: 'wanas-db-app', key: 'password' } },
      });
      expect(vol('data').emptyDir).toBeDefined();
    }
    expect(of('PersistentVolumeClaim')).toEqual([]);
    const t = parseTopology(YAML.parse(of('ConfigMap')[0]!.data['topology.yaml'] as string));
    expect(t.settings.store).toBe('postgresql:///?schema=wanas-{site}-{pod}');
    expect(run.stdout).toContain(
      '# Pods keep their state in PostgreSQL, one schema per pod: the Secret wanas-db-app',
    );
  });

  it('runs --store sqlite only with one replica per pod, its file on a ReadWriteOnce claim', () => {
    const refused = k8s('--topology', DEMO, '--image', 'w:1', '--store', 'sqlite');
    expect(refused.status).toBe(2);
    expect(refused.stderr).toMatch(/--store sqlite needs one replica per pod .* us-east\/pod-1 \(2\)/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-k8s-sqlite-'));
    try {
      const file = path.join(dir, 'one.yaml');
      fs.writeFileSync(
        file,
        YAML.stringify({
          federation: 'one',
          sites: [{ name: 's', pods: [{ name: 'p', brokers: [{ id: 'a', address: '127.0.0.1:7000' }] }] }],
        }),
      );
      const r = k8s('--topology', file, '--image', 'w:1', '--store', 'sqlite');
      expect(r.status).toBe(0);
      const claim = r.docs.find((d) => d.kind === 'PersistentVolumeClaim')!;
      expect(claim.spec.accessModes).toEqual(['ReadWriteOnce']);
      const c = r.docs.find((d) => d.kind === 'Deployment')!.spec.template.spec.containers[0];
      expect(c.env.find((e: Obj) => e.name === 'PGPASSWORD')).toBeUndefined();
      const t = parseTopology(YAML.parse(r.docs.find((d) => d.kind === 'ConfigMap')!.data['topology.yaml']));
      expect(t.settings.store).toBeUndefined();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('puts a topology in the ConfigMap that finds every pod through its headless Service, over mTLS', () => {
    const cm = of('ConfigMap')[0]!;
    const dep = of('Deployment')[0]!;
    const mount = dep.spec.template.spec.containers[0].volumeMounts.find((m: Obj) => m.name === 'topology');
    expect(dep.spec.template.spec.containers[0].args[1]).toBe(`${mount.mountPath}/topology.yaml`);
    const t = parseTopology(YAML.parse(cm.data['topology.yaml']));
    expect(t.security.mode).toBe('mtls');
    for (const p of pods) {
      const pod = t.sites.find((s) => s.name === p.site)!.pods.find((x) => x.name === p.pod)!;
      expect(pod.dns).toMatchObject({
        host: `wanas-${p.site}-${p.pod}.vdi.svc.cluster.local`,
        port: 7000,
        healthAddress: '0.0.0.0:7001',
      });
    }
    expect(t.settings.dataDir).toBe(
      dep.spec.template.spec.containers[0].volumeMounts.find((m: Obj) => m.name === 'data').mountPath,
    );
  });

  it("keeps the source topology's tracing section in the ConfigMap's topology", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-k8s-tracing-'));
    try {
      const file = path.join(dir, 'topology.yaml');
      const tracing = {
        endpoint: 'http://otel-collector.observability:4318',
        sampler: 'traceidratio',
        samplerRatio: 0.2,
      };
      fs.writeFileSync(file, YAML.stringify({ ...demo, tracing }));
      const r = k8s('--topology', file, '--image', 'registry.example.com/wanas:1.0');
      expect(r.status).toBe(0);
      const cm = r.docs.find((d) => d.kind === 'ConfigMap')!;
      expect(parseTopology(YAML.parse(cm.data['topology.yaml'])).tracing).toMatchObject(tracing);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('emits one datacenter with --site, and names the Secrets to create on stderr', () => {
    const r = k8s(
      '--topology',
      DEMO,
      '--image',
      'w:1',
      '--site',
      'eu-west',
      '--data',
      'emptydir',
      '--no-namespace-object',
    );
    expect(r.status).toBe(0);
    expect(r.docs.filter((d) => d.kind === 'Deployment').map((d) => d.metadata.name)).toEqual([
      'wanas-eu-west-pod-1',
      'wanas-eu-west-pod-2',
    ]);
    expect(r.docs.some((d) => d.kind === 'Namespace' || d.kind === 'PersistentVolumeClaim')).toBe(false);
    expect(r.stderr).toMatch(/wanas-eu-west-pod-1-tls: certificate name eu-west-pod-1/);
    expect(r.stderr).not.toMatch(/us-east/);
  });

  it('with --tls-dir writes per-pod certificates signed by one CA, and never prints a key', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-k8s-tls-'));
    try {
      const r = k8s('--topology', DEMO, '--image', 'w:1', '--site', 'ap-south', '--tls-dir', dir);
      expect(r.status).toBe(0);
      expect(r.stderr).toMatch(/kubectl -n wanas create secret generic wanas-ap-south-pod-1-tls/);
      expect(r.stdout + r.stderr).not.toMatch(/PRIVATE KEY/);
      const ca = new crypto.X509Certificate(fs.readFileSync(path.join(dir, 'ca.crt')));
      const cert = new crypto.X509Certificate(fs.readFileSync(path.join(dir, 'ap-south-pod-1.crt')));
      expect(cert.verify(ca.publicKey)).toBe(true);
      expect(cert.subject).toMatch(/CN=ap-south-pod-1/);
      expect(cert.subjectAltName).toMatch(/DNS:wanas-ap-south\.wanas\.svc/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad flags and topologies with a message naming the problem', () => {
    const cases: [string[], RegExp][] = [
      [['--topology', DEMO], /required option '--image <image>'/],
      [['--topology', DEMO, '--image', 'w:1', '--namespace', 'Bad_NS'], /"Bad_NS" is not a namespace name/],
      [['--topology', DEMO, '--image', 'w:1', '--site', 'mars'], /--site mars: not in the topology/],
      [['--topology', DEMO, '--image', 'w:1', '--data', 'nfs'], /--data must be pvc or emptydir/],
      [['--topology', DEMO, '--image', 'w:1', '--store', 'mysql'], /--store must be postgres or sqlite/],
      [['--topology', DEMO, '--image', 'w:1', '--cpu', 'lots'], /"lots" is not a quantity/],
      [['--topology', '/nonexistent.yaml', '--image', 'w:1'], /cannot read topology file/],
    ];
    for (const [args, msg] of cases) {
      const r = k8s(...args);
      expect({ args, status: r.status, stdout: r.stdout }).toEqual({
        args,
        status: expect.any(Number),
        stdout: '',
      });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(msg);
    }
  });

  it('passes configured operations through: services, pod addresses, and their files in the ConfigMap', () => {
    const example = path.join(ROOT, 'examples/inventory');
    const r = k8s('--topology', path.join(example, 'topology.yaml'), '--image', 'w:1');
    expect(r.status).toBe(0);
    const cm = r.docs.find((d) => d.kind === 'ConfigMap')!;
    expect(() => new ConfigMap(cm).validate()).not.toThrow();
    const t = parseTopology(YAML.parse(cm.data['topology.yaml'] as string));
    // The descriptor set travels as binaryData, byte for byte; the module as text; both under the mount.
    const descriptor = t.services.inventory!.grpc!.descriptorSet!;
    expect(descriptor).toBe('/etc/wanas/topology/descriptor-inventory-inventory.binpb');
    expect(Buffer.from(cm.binaryData[path.basename(descriptor)] as string, 'base64')).toEqual(
      fs.readFileSync(path.join(example, 'inventory.binpb')),
    );
    const module = t.operations.find((o) => 'module' in o) as { module: string };
    expect(module.module).toBe('/etc/wanas/topology/module-7-geo.js');
    expect(cm.data['module-7-geo.js']).toBe(fs.readFileSync(path.join(example, 'ops/geo.js'), 'utf8'));
    // dev commands are for wanas up only; the pods keep their backends' addresses.
    expect(t.services.inventory!.dev).toBeUndefined();
    expect(t.sites.find((s) => s.name === 'eu-west')!.pods[0]!.services).toEqual({
      inventory: '127.0.0.1:19131',
      catalog: 'http://127.0.0.1:19231',
    });
    expect(t.operations.filter((o) => !('module' in o)).map((o) => (o as { name: string }).name)).toContain(
      'inventory.reserve',
    );
    // A module mounted from the ConfigMap is given the broker's own @wanas/operations without NODE_PATH, as
    // under `wanas up` (docker-image.e2e loads such a module through the image's ENTRYPOINT).
    const c = r.docs.find((d) => d.kind === 'Deployment')!.spec.template.spec.containers[0];
    expect(c.env.map((e: { name: string }) => e.name)).not.toContain('NODE_PATH');
  });
});
