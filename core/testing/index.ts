/** Test kits for plugin authors (`stillpoint/testing`). */
export * from './driver-contract.ts';
export * from './storage-kit.ts';
