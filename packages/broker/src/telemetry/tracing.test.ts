import { parseTopology } from '@wanas/topology';
import { tracingSettings } from './tracing';

const sites = [{ name: 's1', pods: [{ name: 'p1', brokers: [{ id: 'a', address: '127.0.0.1:7101' }] }] }];
const tracingOf = (tracing: unknown) => parseTopology({ federation: 'f', sites, tracing }).tracing;

describe('tracing settings', () => {
  it('are off with no endpoint in the topology or the environment', () => {
    const s = tracingSettings(tracingOf(undefined), {});
    expect(s).toMatchObject({ on: false, protocol: 'http/protobuf', serviceName: 'wanas' });
  });

  it("come from the topology's tracing section", () => {
    const t = tracingOf({
      endpoint: 'http://otel-collector:4318/',
      protocol: 'http/json',
      sampler: 'parentbased_traceidratio',
      samplerRatio: 0.25,
      serviceName: 'brokers',
    });
    const s = tracingSettings(t, {});
    expect(s).toMatchObject({
      on: true,
      protocol: 'http/json',
      url: 'http://otel-collector:4318/v1/traces',
      serviceName: 'brokers',
    });
    expect(s.sampler).toEqual({ name: 'parentbased_traceidratio', ratio: 0.25 });
  });

  it('let a standard variable a broker has win over the topology', () => {
    const t = tracingOf({ endpoint: 'http://otel-collector:4318', sampler: 'always_off', serviceName: 'x' });
    const s = tracingSettings(t, {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://sidecar:4318',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_TRACES_SAMPLER: 'always_on',
      OTEL_SERVICE_NAME: 'mine',
    });
    // The exporter and the SDK read the variables themselves: no URL or sampler of the topology is passed.
    expect(s).toMatchObject({
      on: true,
      url: undefined,
      endpoint: 'http://sidecar:4318',
      protocol: 'http/json',
    });
    expect(s.sampler).toBeUndefined();
    expect(s.serviceName).toBe('mine');
    expect(tracingSettings(t, { OTEL_SDK_DISABLED: 'true' }).on).toBe(false);
    expect(tracingSettings(t, { OTEL_TRACES_EXPORTER: 'none' }).on).toBe(false);
  });
});
