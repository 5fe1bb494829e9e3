/** Every fuzz target, by name, built on demand (some build corpora or start receivers). */
import type { FuzzTarget } from './harness.js';
import { controlFrameTarget, controlStreamTarget } from './control.js';
import { inspectTarget } from './inspect.js';
import { controlTimingTarget, pageBookkeepingTarget } from './bookkeeping.js';
import { qemuMainTarget, qemuRecvTarget } from './qemu.js';
import { methodNames, methodTarget } from './methods.js';
import { receiverHelloTarget, receiverTarget } from './receiver.js';
import { initPacketTarget, packetHeaderTarget } from './wire.js';
import { deltaRefsTarget } from './delta.js';
import { fileHeaderTarget } from './file-header.js';

export interface TargetEntry {
  name: string;
  create(): Promise<FuzzTarget<unknown>>;
}

const entry = <T>(name: string, create: () => FuzzTarget<T> | Promise<FuzzTarget<T>>): TargetEntry => ({
  name,
  create: async () => (await create()) as unknown as FuzzTarget<unknown>,
});

export function fuzzTargets(): TargetEntry[] {
  return [
    entry('init-packet', initPacketTarget),
    entry('packet-header', packetHeaderTarget),
    entry('delta-refs', deltaRefsTarget),
    entry('file-header', fileHeaderTarget),
    entry('control-frame', controlFrameTarget),
    entry('control-stream', controlStreamTarget),
    ...methodNames().map((m) => entry(`method-${m}`, () => methodTarget(m))),
    entry('inspect', inspectTarget),
    entry('receiver', receiverTarget),
    entry('receiver-hello', receiverHelloTarget),
    entry('page-bookkeeping', pageBookkeepingTarget),
    entry('control-timing', controlTimingTarget),
    entry('qemu-main', qemuMainTarget),
    entry('qemu-recv', qemuRecvTarget),
  ];
}
