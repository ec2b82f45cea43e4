import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_SOCKET_GLOBS } from '../../../api/index.js';
import { ConfigError, loadDaemonSettings } from './config.js';

describe('loadDaemonSettings', () => {
  let dir: string;
  beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmsnap-config-'))));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('refuses to start without NODE_NAME', () => {
    expect(() => loadDaemonSettings({ env: {} })).toThrow(/NODE_NAME is not set/);
    expect(() => loadDaemonSettings({ env: { NODE_NAME: 'Bad Node' } })).toThrow(ConfigError);
  });

  it('uses the schema defaults without a file', () => {
    const s = loadDaemonSettings({ env: { NODE_NAME: 'node-a' } });
    expect(s.nodeName).toBe('node-a');
    expect(s.config.socketGlobs).toEqual(DEFAULT_SOCKET_GLOBS);
    expect(s.config.inventoryIntervalSeconds).toBe(30);
  });

  it('reads YAML from VMSNAP_AGENT_CONFIG and JSON from --config, env overriding both', () => {
    const yaml = path.join(dir, 'agent.yaml');
    fs.writeFileSync(yaml, 'vmRoot: /srv/vms\nstorageRoot: /srv/snaps\nsocketGlobs:\n  - "*/*/monitor.sock"\ninventoryIntervalSeconds: 60\n');
    const json = path.join(dir, 'agent.json');
    fs.writeFileSync(json, JSON.stringify({ vmRoot: '/json/vms' }));
    const fromYaml = loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_AGENT_CONFIG: yaml } });
    expect(fromYaml.config).toEqual({ vmSource: 'sockets', kubeletRootDir: '/var/lib/kubelet', vmRoot: '/srv/vms', storageRoot: '/srv/snaps', socketGlobs: ['*/*/monitor.sock'], inventoryIntervalSeconds: 60, maxConcurrentOperations: 2, stallTimeoutSeconds: 60 });
    const fromFlag = loadDaemonSettings({ configPath: json, env: { NODE_NAME: 'n', VMSNAP_AGENT_CONFIG: yaml } });
    expect(fromFlag.config.vmRoot).toBe('/json/vms');
    const overridden = loadDaemonSettings({
      env: { NODE_NAME: 'n', VMSNAP_AGENT_CONFIG: yaml, VMSNAP_VM_ROOT: '/tmp/vmroot', VMSNAP_STORAGE_ROOT: '/tmp/snaps', VMSNAP_INVENTORY_INTERVAL_SECONDS: '5', VMSNAP_MAX_CONCURRENT_OPERATIONS: '4' },
    });
    expect(overridden.config).toMatchObject({ vmRoot: '/tmp/vmroot', storageRoot: '/tmp/snaps', inventoryIntervalSeconds: 5, maxConcurrentOperations: 4, socketGlobs: ['*/*/monitor.sock'] });
  });

  it('takes the stall bound and the per-namespace share from the environment', () => {
    const s = loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_STALL_TIMEOUT_SECONDS: '15', VMSNAP_MAX_CONCURRENT_OPERATIONS: '4', VMSNAP_MAX_OPERATIONS_PER_NAMESPACE: '2' } });
    expect(s.config).toMatchObject({ stallTimeoutSeconds: 15, maxConcurrentOperations: 4, maxOperationsPerNamespace: 2 });
  });

  it('takes the VM source and the kubelet root from VMSNAP_VM_SOURCE and VMSNAP_KUBELET_ROOT_DIR', () => {
    const s = loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_VM_SOURCE: 'pods', VMSNAP_KUBELET_ROOT_DIR: '/srv/kubelet' } });
    expect(s.config).toMatchObject({ vmSource: 'pods', kubeletRootDir: '/srv/kubelet' });
    expect(() => loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_VM_SOURCE: 'Pods' } })).toThrow(/vmSource/);
    expect(() => loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_KUBELET_ROOT_DIR: 'kubelet' } })).toThrow(/kubeletRootDir must be an absolute path/);
  });

  it('names the field that is wrong', () => {
    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(bad, 'vmRoot: relative/path\nunknownField: 1\n');
    expect(() => loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_AGENT_CONFIG: bad } })).toThrow(/vmRoot must be an absolute path/);
    expect(() => loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_INVENTORY_INTERVAL_SECONDS: 'soon' } })).toThrow(/inventoryIntervalSeconds/);
    expect(() => loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_MAX_CONCURRENT_OPERATIONS: '0' } })).toThrow(/maxConcurrentOperations/);
    expect(() => loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_STALL_TIMEOUT_SECONDS: '1' } })).toThrow(/stallTimeoutSeconds/);
    expect(() => loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_STALL_TIMEOUT_SECONDS: 'forever' } })).toThrow(/stallTimeoutSeconds/);
    // One namespace may never take every slot.
    expect(() => loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_MAX_OPERATIONS_PER_NAMESPACE: '2' } })).toThrow(
      /maxOperationsPerNamespace.*less than maxConcurrentOperations \(2\)/,
    );
    expect(() => loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_AGENT_CONFIG: path.join(dir, 'missing.yaml') } })).toThrow(/cannot read the agent config/);
    const list = path.join(dir, 'list.yaml');
    fs.writeFileSync(list, '- a\n');
    expect(() => loadDaemonSettings({ env: { NODE_NAME: 'n', VMSNAP_AGENT_CONFIG: list } })).toThrow(/must be a mapping/);
  });
});
