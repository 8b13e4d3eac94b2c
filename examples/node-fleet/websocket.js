// The little of the WebSocket protocol (RFC 6455) the fleet needs, with
// Node's standard library only: the handshake's accept key, and frames
// written and read. app.js serves with it, client.js talks with it.
"use strict";
const crypto = require("crypto");

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const OP = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa };
// Larger frames are refused (close 1009): this is an echo, not a file store.
const MAX_PAYLOAD = 1 << 20;

// The Sec-WebSocket-Accept answer to a client's Sec-WebSocket-Key.
function acceptKey(key) {
  return crypto.createHash("sha1").update(key + GUID).digest("base64");
}

// One frame. Clients must mask what they send (`mask`); servers must not.
function encode(opcode, payload, { mask = false, fin = true } = {}) {
  const length = payload.length;
  let head;
  if (length < 126) {
    head = Buffer.from([0, length]);
  } else if (length < 65536) {
    head = Buffer.alloc(4);
    head[1] = 126;
    head.writeUInt16BE(length, 2);
  } else {
    head = Buffer.alloc(10);
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(length), 2);
  }
  head[0] = (fin ? 0x80 : 0) | opcode;
  if (!mask) {
    return Buffer.concat([head, payload]);
  }
  head[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) {
    body[i] ^= key[i & 3];
  }
  return Buffer.concat([head, key, body]);
}

// A close frame's payload: the status code, then an optional reason.
function closePayload(code, reason = "") {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return payload;
}

// Collects a connection's bytes and hands out whole frames.
class FrameReader {
  constructor() {
    this.buffered = Buffer.alloc(0);
  }

  push(chunk) {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
  }

  // The next whole frame ({ fin, opcode, masked, payload }), or null until
  // more bytes arrive. Throws a RangeError for a frame over MAX_PAYLOAD.
  next() {
    const b = this.buffered;
    if (b.length < 2) {
      return null;
    }
    let length = b[1] & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (b.length < 4) return null;
      length = b.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (b.length < 10) return null;
      const long = b.readBigUInt64BE(2);
      length = long > BigInt(MAX_PAYLOAD) ? Infinity : Number(long);
      offset = 10;
    }
    if (length > MAX_PAYLOAD) {
      throw new RangeError(`a frame of ${length} bytes; at most ${MAX_PAYLOAD}`);
    }
    const masked = (b[1] & 0x80) !== 0;
    const start = offset + (masked ? 4 : 0);
    if (b.length < start + length) {
      return null;
    }
    const payload = Buffer.from(b.subarray(start, start + length));
    if (masked) {
      for (let i = 0; i < payload.length; i++) {
        payload[i] ^= b[offset + (i & 3)];
      }
    }
    this.buffered = b.subarray(start + length);
    return { fin: (b[0] & 0x80) !== 0, opcode: b[0] & 0x0f, masked, payload };
  }
}

module.exports = { OP, MAX_PAYLOAD, acceptKey, encode, closePayload, FrameReader };
