export type * from './vm.ts';
export type * from './driver.ts';
export type * from './quiescer.ts';
export type * from './reader.ts';
export type * from './storage.ts';
export type * from './snapshot.ts';
