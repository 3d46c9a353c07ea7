// One call per chunk: BLAKE3 of `len` bytes at `data` into `out` (32 bytes), keyed with the
// 32 bytes at `key` (keyed mode) or, with `key` NULL, plain. Stillpoint's own; the rest of this
// directory is the official implementation, unchanged.
#include "blake3.h"

void stillpoint_blake3(const uint8_t *key, const uint8_t *data, size_t len, uint8_t *out) {
  blake3_hasher hasher;
  if (key) {
    blake3_hasher_init_keyed(&hasher, key);
  } else {
    blake3_hasher_init(&hasher);
  }
  blake3_hasher_update(&hasher, data, len);
  blake3_hasher_finalize(&hasher, out, BLAKE3_OUT_LEN);
}
