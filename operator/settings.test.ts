import { operatorSettings } from './settings.js';

describe('operator settings', () => {
  it('reads what the chart renders', () => {
    const s = operatorSettings({
      VMSNAP_LOG_LEVEL: 'debug',
      VMSNAP_METRICS_PORT: 'off',
      VMSNAP_HEALTH_PORT: '8081',
      VMSNAP_HEALTH_HOST: '10.1.2.3',
      VMSNAP_LEASE_NAME: 'my-lease',
      VMSNAP_LEASE_NAMESPACE: 'sys',
      VMSNAP_LEASE_DURATION_SECONDS: '20',
      VMSNAP_LEASE_RENEW_DEADLINE_SECONDS: '12',
      VMSNAP_LEASE_RETRY_PERIOD_SECONDS: '3',
      VMSNAP_NODE_LOSS_GRACE_SECONDS: '30',
      POD_NAME: 'op-0',
      POD_NAMESPACE: 'sys',
    });
    expect(s).toEqual({
      logLevel: 'debug',
      metricsPort: undefined,
      metricsHost: '0.0.0.0',
      healthPort: 8081,
      healthHost: '10.1.2.3',
      namespace: 'sys',
      nodeLossGraceSeconds: 30,
      leaderElection: { namespace: 'sys', name: 'my-lease', identity: 'op-0', leaseDurationSeconds: 20, renewDeadlineSeconds: 12, retryPeriodSeconds: 3 },
    });
  });

  it('fills defaults, treats an empty variable as unset, and reads the lease namespace from the pod', () => {
    const s = operatorSettings({ VMSNAP_METRICS_PORT: '', VMSNAP_LEADER_ELECTION: 'true', POD_NAMESPACE: 'ns', POD_NAME: 'p' });
    expect(s).toMatchObject({ logLevel: 'info', metricsPort: 8080, metricsHost: '0.0.0.0', healthPort: undefined, namespace: 'ns', nodeLossGraceSeconds: 600 });
    expect(s.leaderElection).toEqual({ namespace: 'ns', name: 'vmsnap-operator', identity: 'p', leaseDurationSeconds: 15, renewDeadlineSeconds: 10, retryPeriodSeconds: 2 });
    expect(operatorSettings({ VMSNAP_METRICS_PORT: '0', VMSNAP_LEADER_ELECTION: 'false' })).toMatchObject({ metricsPort: 0, leaderElection: undefined });
  });

  it.each([
    [{ VMSNAP_HEALTH_PORT: 'abc' }, 'VMSNAP_HEALTH_PORT=abc must be a port (0-65535)'],
    [{ VMSNAP_HEALTH_PORT: '70000' }, 'VMSNAP_HEALTH_PORT=70000 must be a port (0-65535)'],
    [{ VMSNAP_METRICS_PORT: 'on' }, 'VMSNAP_METRICS_PORT=on must be off or a port (0-65535)'],
    [{ VMSNAP_LEASE_DURATION_SECONDS: '0' }, 'VMSNAP_LEASE_DURATION_SECONDS=0 must be a whole number of seconds, at least 1'],
    [{ VMSNAP_LEASE_RETRY_PERIOD_SECONDS: '1.5' }, 'VMSNAP_LEASE_RETRY_PERIOD_SECONDS=1.5 must be a whole number of seconds, at least 1'],
    [{ VMSNAP_NODE_LOSS_GRACE_SECONDS: '0' }, 'VMSNAP_NODE_LOSS_GRACE_SECONDS=0 must be a whole number of seconds, at least 1'],
    [{ VMSNAP_LEADER_ELECTION: 'yes' }, 'VMSNAP_LEADER_ELECTION=yes'],
    [{ VMSNAP_LOG_LEVEL: 'loud' }, 'VMSNAP_LOG_LEVEL=loud'],
  ])('refuses %j naming the variable, its value and what is allowed', (env, message) => {
    expect(() => operatorSettings(env)).toThrow(message);
  });

  it('names every bad variable at once, and what the enums allow', () => {
    expect(() => operatorSettings({ VMSNAP_LOG_LEVEL: 'loud', VMSNAP_LEADER_ELECTION: 'yes' })).toThrow(
      /VMSNAP_LOG_LEVEL=loud .*"info".*; VMSNAP_LEADER_ELECTION=yes .*"true".*"false"/,
    );
  });
});
