// Sizes libuv's threadpool before anything uses it. Imported first by main.ts
// so it runs before any fs call: writes to the virtio port block a pool thread
// while no host is connected, and libuv reads this variable only once.
// Must never import anything or do I/O itself.

const AGENT_THREADPOOL_SIZE = '16';

if (!process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = AGENT_THREADPOOL_SIZE;

export {};
