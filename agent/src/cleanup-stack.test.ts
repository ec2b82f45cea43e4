import fs from 'node:fs';
import { CleanupError, CleanupStack, closeFds, withCleanup } from './cleanup-stack.js';
import { VmsnapError, reasonOf } from './errors.js';
import { Reason } from '../../api/protocol.js';

describe('CleanupStack', () => {
  it('runs clean-ups last first, awaiting each before the next', async () => {
    const stack = new CleanupStack();
    const ran: string[] = [];
    stack.defer('a', () => ran.push('a'));
    stack.defer('b', async () => {
      await new Promise((r) => setTimeout(r, 5));
      ran.push('b');
    });
    stack.defer('c', () => ran.push('c'));
    expect(await stack.unwind()).toEqual([]);
    expect(ran).toEqual(['c', 'b', 'a']);
    // Unwound: nothing runs twice.
    expect(await stack.unwind()).toEqual([]);
    expect(ran).toEqual(['c', 'b', 'a']);
  });

  it('keeps going after a clean-up throws or rejects, and reports which failed', async () => {
    const stack = new CleanupStack();
    const ran: string[] = [];
    const boom = new Error('boom');
    stack.defer('first', () => ran.push('first'));
    stack.defer('sync throw', () => {
      throw boom;
    });
    stack.defer('rejects', () => Promise.reject(new Error('no')));
    stack.defer('last', () => ran.push('last'));
    const failures = await stack.unwind();
    expect(ran).toEqual(['last', 'first']);
    expect(failures.map((f) => f.what)).toEqual(['rejects', 'sync throw']);
    expect(failures[1]!.error).toBe(boom);
  });

  it('keep() drops a clean-up without running it; now() runs it once, at once, and rethrows its error', async () => {
    const stack = new CleanupStack();
    const ran: string[] = [];
    const kept = stack.defer('kept', () => ran.push('kept'));
    const early = stack.defer('early', () => ran.push('early'));
    const failing = stack.defer('failing', () => {
      throw new Error('now failed');
    });
    stack.defer('late', () => ran.push('late'));
    kept.keep();
    await early.now();
    await early.now();
    expect(ran).toEqual(['early']);
    await expect(failing.now()).rejects.toThrow('now failed');
    expect(await stack.unwind()).toEqual([]);
    expect(ran).toEqual(['early', 'late']);
  });
});

describe('withCleanup', () => {
  it('unwinds after success, leaving what the body kept', async () => {
    const ran: string[] = [];
    const out = await withCleanup(async (stack) => {
      stack.defer('always', () => ran.push('always'));
      stack.defer('undo', () => ran.push('undo')).keep();
      return 42;
    });
    expect(out).toBe(42);
    expect(ran).toEqual(['always']);
  });

  it("rethrows the body's own error, class and reason kept, after undoing everything", async () => {
    const ran: string[] = [];
    const err = new VmsnapError('it broke', { reason: Reason.MigrationStalled });
    const thrown = await withCleanup(async (stack) => {
      stack.defer('one', () => ran.push('one'));
      stack.defer('two', () => ran.push('two'));
      throw err;
    }).catch((e: unknown) => e);
    expect(thrown).toBe(err);
    expect(reasonOf(thrown)).toBe(Reason.MigrationStalled);
    expect((thrown as Error).message).toBe('it broke');
    expect(ran).toEqual(['two', 'one']);
  });

  it('says in the error what could not be undone, and still runs the rest', async () => {
    const ran: string[] = [];
    const thrown = await withCleanup(async (stack) => {
      stack.defer('remove /tmp/x', () => ran.push('remove'));
      stack.defer('quit QEMU', () => {
        throw new Error('EPERM');
      });
      throw new Error('load failed');
    }).catch((e: unknown) => e as Error);
    expect(thrown.message).toBe('load failed; clean-up failed too: quit QEMU (EPERM)');
    expect(ran).toEqual(['remove']);
  });

  it('fails with a CleanupError naming each failed clean-up when only the clean-up failed', async () => {
    const thrown = await withCleanup(async (stack) => {
      stack.defer('close fd 9', () => {
        throw new Error('EBADF');
      });
      stack.defer('close the QMP connection', () => Promise.reject(new Error('gone')));
      return 'done';
    }).catch((e: unknown) => e);
    expect(thrown).toBeInstanceOf(CleanupError);
    expect((thrown as CleanupError).failures.map((f) => f.what)).toEqual(['close the QMP connection', 'close fd 9']);
    expect((thrown as Error).message).toBe('clean-up failed: close the QMP connection (gone); close fd 9 (EBADF)');
  });
});

describe('closeFds', () => {
  it('closes every fd of the list and empties it, so a second run closes nothing', () => {
    const fds = [fs.openSync('/dev/null', 'r'), fs.openSync('/dev/null', 'r')];
    const opened = [...fds];
    closeFds(fds);
    expect(fds).toEqual([]);
    for (const fd of opened) expect(() => fs.fstatSync(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => closeFds(fds)).not.toThrow();
  });
});
