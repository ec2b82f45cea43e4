import { parseCommand, UsageError, DEFAULT_CHANNELS, USAGE } from './args.js';

describe('vmsnap-agent arguments', () => {
  it('parses save with defaults', () => {
    expect(parseCommand(['save', '--qmp', '/s', '--out', '/f'])).toEqual({
      kind: 'save', qmp: '/s', out: '/f', channels: DEFAULT_CHANNELS, directIO: 'auto', after: 'resume', live: false, force: false, digest: false, json: false,
    });
  });

  it('parses every save option', () => {
    const c = parseCommand(['save', '--qmp', '/s', '--out', '/f', '--channels', '8', '--direct-io', 'off', '--after', 'stop', '--live', '--digest', '--json']);
    expect(c).toMatchObject({ channels: 8, directIO: 'off', after: 'stop', live: true, digest: true, json: true });
  });

  it('parses restore and inspect', () => {
    expect(parseCommand(['restore', '--in', '/f', '--qmp', '/s', '--launch', '--paused'])).toMatchObject({ kind: 'restore', launch: true, paused: true, verify: false, channels: undefined });
    expect(parseCommand(['restore', '--in', '/f', '--qmp', '/s', '--verify'])).toMatchObject({ verify: true });
    expect(parseCommand(['inspect', '/f', '--json'])).toEqual({ kind: 'inspect', file: '/f', verify: false, json: true });
    expect(parseCommand(['inspect', '/f', '--verify'])).toMatchObject({ verify: true });
  });

  it('parses a lazy restore', () => {
    expect(parseCommand(['restore', '--in', '/f', '--qmp', '/s', '--launch', '--lazy'])).toMatchObject({ launch: true, lazy: true, prefetch: true });
    expect(parseCommand(['restore', '--in', '/f', '--qmp', '/s', '--launch', '--lazy', '--no-prefetch'])).toMatchObject({ lazy: true, prefetch: false });
    expect(parseCommand(['restore', '--in', '/f', '--qmp', '/s'])).toMatchObject({ lazy: false });
  });

  it('parses daemon', () => {
    expect(parseCommand(['daemon'])).toEqual({ kind: 'daemon', config: undefined });
    expect(parseCommand(['daemon', '--config', '/etc/vmsnap/agent.yaml'])).toEqual({ kind: 'daemon', config: '/etc/vmsnap/agent.yaml' });
  });

  it.each([
    [['daemon', '--qmp', '/s'], /daemon takes only --config FILE; got --qmp/],
    [['daemon', 'extra'], /daemon takes only --config FILE/],
    [['save', '--out', '/f'], /--qmp is required/],
    [['save', '--qmp', '/s', '--out', '/f', '--channels', '0'], /--channels must be an integer from 1 to 64; got '0'/],
    [['save', '--qmp', '/s', '--out', '/f', '--channels', '65'], /--channels/],
    [['save', '--qmp', '/s', '--out', '/f', '--channels', '2.5'], /--channels/],
    [['save', '--qmp', '/s', '--out', '/f', '--direct-io', 'yes'], /--direct-io must be one of auto, on, off; got 'yes'/],
    [['save', '--qmp', '/s', '--out', '/f', '--after', 'pause'], /--after must be one of resume, stop/],
    [['save', '--qmp', '/s', '--out', '/f', '--bogus'], /bogus/],
    [['inspect'], /inspect needs a FILE/],
    [['restore', '--in', '/f', '--qmp', '/s', '--lazy'], /--lazy needs --launch/],
    [['restore', '--in', '/f', '--qmp', '/s', '--launch', '--no-prefetch'], /--no-prefetch goes with --lazy/],
    [['restore', '--in', '/f', '--qmp', '/s', '--launch', '--lazy', '--direct-io', 'on'], /--lazy cannot be combined with --direct-io on/],
    [['frobnicate'], /unknown command 'frobnicate'/],
  ])('refuses %j', (argv, message) => {
    expect(() => parseCommand(argv as string[])).toThrow(UsageError);
    expect(() => parseCommand(argv as string[])).toThrow(message as RegExp);
  });
});

test('--help says that restore --launch runs QEMU as the caller', () => {
  expect(USAGE).toMatch(/--launch starts QEMU from the command line recorded in FILE, as the user\s+running this\s+command/);
});
