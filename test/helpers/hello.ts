/** A valid hello of the control protocol, for tests that build their own. */
import { CONTROL_VERSION, DIGEST_ALGORITHM, type Hello } from '../../src/control/protocol.js';
import { MULTIFD_PACKET_SIZE } from '../../src/wire/constants.js';

/** One channel of 4 KiB pages, no compression, one 1 MiB ram block "ram0"; `over` in place of any field. */
export function helloMessage(over: Partial<Hello> = {}): Hello {
  return {
    type: 'hello',
    version: CONTROL_VERSION,
    uuid: '00112233-4455-6677-8899-aabbccddeeff',
    channels: 1,
    pageSize: 4096,
    packetSize: MULTIFD_PACKET_SIZE,
    compression: 'none',
    methodParams: {},
    zeroPageDetection: 'multifd',
    digest: DIGEST_ALGORITHM,
    ramblocks: [{ name: 'ram0', size: 1 << 20 }],
    ...over,
  };
}
