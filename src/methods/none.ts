/** nocomp: the payload is the normal pages' bytes, in offset order. */
import { ProtocolError } from '../errors.js';
import { MULTIFD_FLAG_NOCOMP } from '../wire/constants.js';
import { defineMethod } from './method.js';
import { checkParams, registerMethod } from './registry.js';

export const none = defineMethod({
  name: 'none',
  flag: MULTIFD_FLAG_NOCOMP,
  qemuCompatible: true,
  description: 'no compression: pages go on the wire as they are',
  offload: false,
  options: [],
  exactPayload: true,
  hardware: null,
  path: () => 'no compression',
  maxPayload: (normalPages, pageSize) => normalPages * pageSize,
  params: (user) => checkParams('none', [], user),
  sendSetup: ({ tally }) => ({
    prepare(pages, normalPages) {
      tally.add('uncompressed', normalPages);
      return pages;
    },
    cleanup() {},
  }),
  recvSetup: ({ channel, pageSize, tally }) => ({
    recv(payload, normalPages, packetNum) {
      const want = normalPages * pageSize;
      const got = payload.reduce((a, p) => a + p.length, 0);
      if (got !== want) {
        throw new ProtocolError('ERR_PAYLOAD_SIZE', `packet size received ${got}, size expected ${want}`, { channel, packetNum });
      }
      tally.add('uncompressed', normalPages);
      return payload;
    },
    cleanup() {},
  }),
});

declare module './registry.js' {
  interface MethodRegistry {
    none: typeof none;
  }
}

registerMethod(none);
