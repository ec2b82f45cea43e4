// The daemon's settings: the node it serves, from NODE_NAME, and the agent
// config file (YAML or JSON, parsed with AgentConfigSchema), with environment
// overrides for tests. Every problem is refused with what to fix.
import fs from 'node:fs';
import { loadYaml } from '@kubernetes/client-node';
import { AgentConfigSchema, DNS1123_SUBDOMAIN_MAX, DNS1123_SUBDOMAIN_PATTERN, formatZodError, type AgentConfig } from '../../../api/index.js';
import { VmsnapError } from '../errors.js';

export interface DaemonSettings {
  nodeName: string;
  config: AgentConfig;
  /** The config file read, if any (for the start-up log). */
  configPath?: string;
}

export class ConfigError extends VmsnapError {
  override name = 'ConfigError';
}

/** Environment variables that override single config fields. */
export const ENV_OVERRIDES = {
  VMSNAP_VM_ROOT: 'vmRoot',
  VMSNAP_STORAGE_ROOT: 'storageRoot',
  VMSNAP_INVENTORY_INTERVAL_SECONDS: 'inventoryIntervalSeconds',
  VMSNAP_MAX_CONCURRENT_OPERATIONS: 'maxConcurrentOperations',
  VMSNAP_MAX_OPERATIONS_PER_NAMESPACE: 'maxOperationsPerNamespace',
  VMSNAP_STALL_TIMEOUT_SECONDS: 'stallTimeoutSeconds',
  VMSNAP_VM_SOURCE: 'vmSource',
  VMSNAP_KUBELET_ROOT_DIR: 'kubeletRootDir',
} as const;

export function loadDaemonSettings(opts: { configPath?: string; env?: NodeJS.ProcessEnv } = {}): DaemonSettings {
  const env = opts.env ?? process.env;
  const nodeName = env.NODE_NAME?.trim();
  if (!nodeName) {
    throw new ConfigError('NODE_NAME is not set: the agent must know its node (in the DaemonSet: env NODE_NAME from fieldRef spec.nodeName)');
  }
  if (nodeName.length > DNS1123_SUBDOMAIN_MAX || !new RegExp(DNS1123_SUBDOMAIN_PATTERN).test(nodeName)) {
    throw new ConfigError(`NODE_NAME "${nodeName}" is not a valid node name (a DNS-1123 subdomain)`);
  }
  const configPath = opts.configPath ?? (env.VMSNAP_AGENT_CONFIG || undefined);
  const raw = configPath ? readConfigFile(configPath) : {};
  const config = parseAgentConfig({ ...raw, ...envOverrides(env) }, configPath);
  return { nodeName, config, configPath };
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read the agent config ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = file.endsWith('.json') ? JSON.parse(text) : loadYaml(text);
  } catch (err) {
    throw new ConfigError(`the agent config ${file} is not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (parsed === undefined || parsed === null) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError(`the agent config ${file} must be a mapping of settings (vmSource, kubeletRootDir, vmRoot, storageRoot, socketGlobs, inventoryIntervalSeconds, maxConcurrentOperations, maxOperationsPerNamespace, stallTimeoutSeconds)`);
  }
  return parsed as Record<string, unknown>;
}

const NUMERIC_FIELDS = new Set<string>(['inventoryIntervalSeconds', 'maxConcurrentOperations', 'maxOperationsPerNamespace', 'stallTimeoutSeconds']);

export function envOverrides(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, field] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    // Numbers stay strings when malformed so that the schema names the field in its error.
    out[field] = NUMERIC_FIELDS.has(field) && /^\d+$/.test(value) ? Number(value) : value;
  }
  return out;
}

export function parseAgentConfig(input: Record<string, unknown>, source?: string): AgentConfig {
  const result = AgentConfigSchema.safeParse(input);
  if (!result.success) {
    throw new ConfigError(`invalid agent config${source ? ` ${source}` : ''} (or VMSNAP_* override): ${formatZodError(result.error)}`);
  }
  return result.data;
}
